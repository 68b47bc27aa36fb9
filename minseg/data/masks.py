"""How a mask file's pixels become class ids: index masks, value maps and colour tables.

Masks arrive in three encodings, and ``MaskDecoder`` turns each into the same thing, an int64
(H, W) array of class ids in [0, C) with ``IGNORE_INDEX`` (-100, ``F.cross_entropy``'s default
``ignore_index``) where the pixel should count nowhere:

* **index** masks (greyscale "L" or palette "P" PNGs): the stored value *is* the class id. For a
  palette PNG that is the palette index, never the colour it shows. fastai's CamVid, SegNet's
  CamVid and Pascal VOC store masks this way.
* **value maps**: a few raw values stand for the classes, e.g. ``{0: "membrane", 255: "cell"}``
  (the ISBI membrane masks). Class k is the k-th entry of the map.
* **colour masks** (RGB PNGs) with a colour table, ``{(64, 128, 64): "Animal", ...}`` (CamVid's
  original ``label_colors.txt``, Cityscapes-style palettes). Class k is the k-th colour.

``ignore`` lists raw values (or colours) that become ``IGNORE_INDEX``: VOC's 255 border, SegNet's
void 11. Any other value that names no class is an error naming the file and the values.
"""
import numpy as np

__all__ = ["IGNORE_INDEX", "MaskDecoder", "read_color_table", "void_class"]

IGNORE_INDEX = -100
_UNKNOWN = -1  # a raw value that names no class: reported, never trained on


def void_class(classes):
    """The id of the class named "Void" (CamVid's unlabelled pixels, trained on but left out of the
    foreground accuracy), or None."""
    classes = list(classes)
    return classes.index("Void") if "Void" in classes else None


def _rgb_key(rgb):
    """(..., 3) uint8 colours → one int per colour, r·2¹⁶ + g·2⁸ + b, so colours compare as numbers."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_color_table(path):
    """``{(r, g, b): name}`` from a text file of lines ``R G B Name`` (CamVid's ``label_colors.txt``)."""
    table = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                rgb = tuple(int(part) for part in parts[:3])
                name = " ".join(parts[3:])
                if len(rgb) != 3 or not name or not all(0 <= v <= 255 for v in rgb):
                    raise ValueError
            except ValueError:
                raise ValueError(f"read_color_table: line {number} of {path} must be 'R G B Name' with "
                                 f"R, G, B in 0..255, got {line.strip()!r}") from None
            table[rgb] = name
    if not table:
        raise ValueError(f"read_color_table: {path} lists no colours")
    return table


class MaskDecoder:
    """Raw mask arrays → class ids; see the module docstring for the three encodings.

    ``MaskDecoder(classes)``: index masks. ``MaskDecoder(values={0: "membrane", 255: "cell"})``: a value
    map. ``MaskDecoder(colors={(r, g, b): name, ...})``: colour masks. ``ignore``: raw values (or RGB
    triples) that become IGNORE_INDEX. ``classes`` and ``colors`` (the classes' own colours, or None)
    are the decoder's results.
    """

    def __init__(self, classes=None, values=None, colors=None, ignore=()):
        if sum(option is not None for option in (values, colors)) > 1:
            raise ValueError("MaskDecoder: pass values or colors, not both")
        self.ignore = [tuple(int(v) for v in item) if isinstance(item, (tuple, list)) else int(item)
                       for item in ignore]
        self.kind = "index" if values is None and colors is None else "values" if values is not None else "colors"
        self.colors = None
        if self.kind == "index":
            if classes is None:
                raise ValueError("MaskDecoder: index masks need the class names (classes=[...] or a codes file)")
            self.classes = list(classes)
            keys = np.arange(len(self.classes))
        else:
            table = {key: name for key, name in (values if values is not None else colors).items()
                     if (tuple(key) if self.kind == "colors" else int(key)) not in self.ignore}
            self.classes = [str(name) for name in table.values()]
            keys = [int(key) for key in table] if self.kind == "values" else [_rgb_key(key) for key in table]
            if self.kind == "colors":
                self.colors = np.array(list(table), dtype=np.uint8)
        ignored = self.ignore if self.kind != "colors" else [_rgb_key(rgb) for rgb in self.ignore]
        self._keys = np.array(list(keys) + list(ignored), dtype=np.int64)
        self._ids = np.array(list(range(len(keys))) + [IGNORE_INDEX] * len(ignored), dtype=np.int64)
        order = np.argsort(self._keys)
        self._keys, self._ids = self._keys[order], self._ids[order]

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def wants_rgb(self):
        """True when masks must be read as RGB (colour tables), False for single-channel masks."""
        return self.kind == "colors"

    def __call__(self, raw):
        """``(ids int64 (H, W), unknown raw values)``; unknown pixels get -1 and are listed."""
        keys = _rgb_key(raw) if self.kind == "colors" else np.asarray(raw, dtype=np.int64)
        # One sorted lookup for the whole mask: searchsorted finds each value's slot in the table.
        slots = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
        found = self._keys[slots] == keys
        ids = np.where(found, self._ids[slots], _UNKNOWN)
        unknown = np.unique(keys[~found]) if not found.all() else np.empty(0, dtype=np.int64)
        return ids, unknown

    def describe(self, unknown):
        """The unknown raw values (or colours) of ``__call__`` in words, at most ten."""
        shown = [((int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) if self.kind == "colors" else int(v))
                 for v in unknown[:10]]
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        what = {"index": f"class ids outside 0..{self.num_classes - 1}",
                "values": "values the value map does not list", "colors": "colours the colour table does not list"}
        return f"holds {what[self.kind]}: {shown}{more}"

    def __repr__(self):
        return f"MaskDecoder(kind={self.kind!r}, classes={self.classes}, ignore={self.ignore})"
