// conv2d.cu: 2-D convolution (forward, input gradient, weight gradient) as an implicit GEMM, float32.
//
// The NumPy twin is minseg/functional/conv.py: there im2col copies every receptive field into a matrix
// and one matmul does the work. Here the same matrix product runs WITHOUT building that matrix: each
// block gathers the im2col values it needs straight from the image while it loads its tiles.
//
// The three GEMMs (x: N,C,H,W   weight: O,C,KH,KW   y: N,O,OH,OW   P = OH*OW, KK = KH*KW):
//
//   forward          y[m, o]         = sum_k  A[m, k] * B[k, o]     m = (n,oh,ow)  k = (c,r,s)   o
//                    A = im2col(x): x[n, c, oh*sh - ph + r*dh, ow*sw - pw + s*dw]   B[k, o] = weight[o, k]
//   input gradient   grad_x[m, c]    = sum_k  A[m, k] * B[k, c]     m = (n,h,w)    k = (o,r,s)   c
//                    A = grad_y[n, o, oh, ow] where oh*sh = h + ph - r*dh (and likewise ow): a tap feeds
//                        (h, w) only when the division is exact and in range, else it contributes 0
//                    B[k, c] = weight[o, c, r, s]
//                    (minseg/cuda/conv.py runs a stride above 1 as stride phases: one call of this GEMM at
//                    stride 1 per phase, with the sub-kernel of the taps that land and a padding that may be
//                    negative; see plan_stride_phases in minseg/cuda/plan.py)
//   weight gradient  grad_w[o, j]    = sum_k  A[o, k] * B[k, j]     o              k = (n,oh,ow) j = (c,r,s)
//                    A[o, k] = grad_y[n, o, oh, ow]   B = im2col(x) transposed: x[n, c, oh*sh-ph+r*dh, ...]
//
// Tiling, once. Output C (rows x cols) is cut into BM x BN tiles, one per thread block; the shared
// dimension K is walked BK = 16 at a time. Per step the block's threads copy a BM x BK slice of A and a
// BK x BN slice of B into shared memory (doing the im2col index arithmetic on the way, zeros for padding
// and for taps that miss), wait, and then every thread multiplies from shared memory into its own
// TM x TN block of accumulators held in registers (register blocking: each value read from shared memory
// is used TM or TN times). Two shared buffers alternate: the next step's A slice is fetched from global
// memory into registers while the first half of the current step is multiplied, its B slice during the
// second half, each stored into the other buffer as soon as it arrives, so one __syncthreads() per step
// suffices and only one slice at a time occupies registers. A thread's TM rows come in groups of 4
// consecutive rows spaced BM/(TM/4) apart (likewise its columns), so that it reads them as float4 and
// neighbouring threads read neighbouring words (no shared-memory bank conflicts). Loads are arranged so
// that consecutive threads read consecutive addresses of the image: along m (ow) for the forward and
// input-gradient gathers, along k (ow again) for the weight gradient. The gathers never divide inside
// the K loop: each thread's k is carried from step to step like the digits of a counter, and what does
// not depend on k (a row's pixel, a column's tap) is worked out once, in registers or in a small table
// in shared memory. When the output has few tiles but K is long (the weight gradient always; deep
// layers at low resolution), gridDim.y splits K: each split writes its partial product to a workspace
// and split_k_sum adds them (deterministic, unlike atomics).
//
// Tile shapes (chosen in minseg/cuda/plan.py by the output's column count, or row count for the weight
// gradient), all 128 or 256 threads:  256x32 (8x4 per thread), 128x64 (8x4), 128x128 (8x8),
// 32x128 (4x8), 64x128 (4x8).
//
// Roofline. Each of the three GEMMs costs 2*N*O*P*C*KK FLOPs and must at least read/write
// x, weight and y once: 4*(N*C*H*W + O*C*KK + N*O*P) bytes. (8,64,360,480) -> 64, 3x3: 102 GFLOP over
// 0.71 GB = 144 FLOP/byte, several times the ratio of float32 FLOP/s to memory bandwidth in the datasheets
// of current data-centre GPUs: compute bound, so the work is keeping the FMA units fed. Per BK step a
// 128x128 tile moves (128+128)*16 floats into shared memory for 128*128*16 FMAs (64 FMAs per float
// loaded), and each thread reads TM+TN = 16 floats from shared memory for 64 FMAs. Registers: a 128x128
// thread holds 64 accumulators under __launch_bounds__(256, 2)'s cap of 128 registers, which is why
// only one prefetched slice at a time is kept and the per-row / per-column index state of the input and
// weight gradients lives in shared memory (tests/cuda_emulation/resources.py reports the allocation).
//
// Offsets are 32-bit ints: minseg/cuda/launch.py refuses arrays of 2^31 elements or more.

#define BK 16       // depth of one K step
#define PAD 4       // extra floats per shared row: keeps float4 alignment, spreads transposed stores over banks
#define OUT_OF_IMAGE (-(1 << 29))  // a row origin that no tap offset can bring back inside the image

struct ConvGeometry {
    int N, C, H, W;            // input
    int O, KH, KW;             // weight (O, C, KH, KW)
    int OH, OW;                // output
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

#define CONV_PARAMS int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, \
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int k_per_split
#define CONV_GEOMETRY ConvGeometry{N, C, H, W, O, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w}

template <int BM, int BN, int TM, int TN>
struct Tile {
    static constexpr int THREADS = (BM / TM) * (BN / TN);
    static constexpr int THREADS_X = BN / TN;           // threads along a tile row (columns)
    static constexpr int A_LOADS = BM * BK / THREADS;   // A values each thread fetches per K step
    static constexpr int B_LOADS = BN * BK / THREADS;
    static constexpr int LANES = THREADS / BK;          // threads sharing one k when loading along k
    static constexpr int ROW_GROUP = BM / (TM / 4);     // distance between a thread's groups of 4 rows
    static constexpr int COL_GROUP = BN / (TN / 4);
    static_assert(TM % 4 == 0 && TN % 4 == 0, "a thread owns whole float4 groups");
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK, "tile must split evenly");
};

// ---------------------------------------------------------------------------------------------------
// Gathers: where each thread's share of an A and a B slice lives in global memory, and where it goes
// in shared memory. Everything that does not depend on k is worked out once, in the constructor (the
// only place with divisions). load() fetches the slice of the current K step and moves on to the next:
// the k indices are carried forward like the digits of a counter, never divided again.
// ---------------------------------------------------------------------------------------------------

// k = (outer, r, s) over a KH x KW window, counted up one at a time with carries.
struct TapCounter {
    int outer, r, s;
    __device__ void start(int k, int KH, int KW) {
        const int KK = KH * KW;
        outer = k / KK;
        r = (k - outer * KK) / KW;
        s = k - outer * KK - r * KW;
    }
    __device__ __forceinline__ void next(int KH, int KW) {
        if (++s == KW) {
            s = 0;
            if (++r == KH) { r = 0; ++outer; }
        }
    }
};

// A thread's A values in the forward and input-gradient gathers: one tile row (consecutive threads,
// consecutive rows: consecutive pixels in memory) and A_LOADS consecutive k of each step.
template <int BM, int THREADS>
struct RowSlice {
    static constexpr int SEGMENTS = THREADS / BM;       // threads per row, each with its own run of k
    static_assert(SEGMENTS * BM == THREADS, "a whole number of threads per tile row");
    int row, k;                                         // tile row; first k of the run within a step
    __device__ RowSlice() : row(threadIdx.x % BM), k((threadIdx.x / BM) * (BK / SEGMENTS)) {}
};

// Forward. A = im2col(x), a row is an output pixel m = (n, oh, ow), k = (c, r, s);
// B = weight viewed as (O, K), loaded along k (a weight row is contiguous in k).
template <int BM, int BN, int TM, int TN>
struct ForwardGather {
    using T = Tile<BM, BN, TM, TN>;
    const float* __restrict__ x;
    const float* __restrict__ weight;
    ConvGeometry g;
    RowSlice<BM, T::THREADS> a_slice;
    int image, h0, w0;            // n*C*H*W, oh*sh - ph, ow*sw - pw of this thread's row
    TapCounter tap;               // (c, r, s) of the first k this thread loads in the current step
    int b_k, b_col, block_n;      // B is tiny and regular: nothing to precompute

    __device__ ForwardGather(const float* x_, const float* weight_, const ConvGeometry& g_, int block_m,
                             int block_n_, int k_begin)
        : x(x_), weight(weight_), g(g_), block_n(block_n_) {
        const int P = g.OH * g.OW, m = block_m + a_slice.row;
        const int n = m / P, p = m - n * P, oh = p / g.OW, ow = p - oh * g.OW;
        const bool inside = m < g.N * P;
        image = inside ? n * g.C * g.H * g.W : 0;
        h0 = inside ? oh * g.stride_h - g.pad_h : OUT_OF_IMAGE;
        w0 = ow * g.stride_w - g.pad_w;
        tap.start(k_begin + a_slice.k, g.KH, g.KW);
        b_k = threadIdx.x % BK;
        b_col = threadIdx.x / BK;
    }

    __device__ void load_a(int k0, int k_end, float (&a)[T::A_LOADS]) {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int h = h0 + tap.r * g.dil_h, w = w0 + tap.s * g.dil_w;
            const bool inside = k0 + a_slice.k + i < k_end && (unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W;
            a[i] = inside ? __ldg(x + image + tap.outer * g.H * g.W + h * g.W + w) : 0.f;
            tap.next(g.KH, g.KW);
        }
#pragma unroll
        for (int i = 0; i < BK - T::A_LOADS; ++i) tap.next(g.KH, g.KW);  // the other threads' runs of this step
    }

    __device__ void load_b(int k0, int k_end, float (&b)[T::B_LOADS]) const {
        const int kb = k0 + b_k, K = g.C * g.KH * g.KW;
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int o = block_n + b_col + i * T::LANES;
            b[i] = (kb < k_end && o < g.O) ? __ldg(weight + o * K + kb) : 0.f;
        }
    }

    __device__ void store_a(float (*As)[BM + PAD], const float (&a)[T::A_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) As[a_slice.k + i][a_slice.row] = a[i];
    }
    __device__ void store_b(float (*Bs)[BN + PAD], const float (&b)[T::B_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) Bs[b_k][b_col + i * T::LANES] = b[i];
    }
};

// q * stride + rem = count * step, kept as count goes up by one (0 <= rem < stride).
struct QuotientRemainder {
    int q, rem;
    __device__ __forceinline__ void add(int step_q, int step_rem, int stride) {
        q += step_q;
        rem += step_rem;
        if (rem >= stride) { rem -= stride; ++q; }
    }
};

// Input gradient. A = grad_y gathered by the transposed index map: a row is an input pixel m = (n, h, w),
// k = (o, r, s), and tap (r, s) reads output pixel oh = (h + ph - r*dh) / sh when that division is exact
// (likewise ow). Writing h + ph = qh*sh + remh and r*dh = qr*sh + remr, it is exact iff remh == remr, and
// then oh = qh - qr: the tap's pair is kept up to date by additions as r and s count up, the rows' pairs
// sit in a table in shared memory (kept in registers, they would crowd out the 128x128 tile's
// accumulators). B[k = (o,r,s), c] = weight[o, c, r, s], loaded along k.
template <int BM, int BN, int TM, int TN>
struct BackwardInputGather {
    using T = Tile<BM, BN, TM, TN>;
    const float* __restrict__ grad_y;
    const float* __restrict__ weight;
    ConvGeometry g;
    RowSlice<BM, T::THREADS> a_slice;
    const int4* rows;                     // per tile row: {n*O*OH*OW, qh, qw, remh*sw + remw}
    int dil_q_h, dil_rem_h, dil_q_w, dil_rem_w;  // the dilation, by the stride
    TapCounter tap;                       // (o, r, s) of the first k this thread loads in the current step
    QuotientRemainder tap_h, tap_w;       // r*dh and s*dw, by the stride
    int b_k, b_col, block_n;
    int b_o, b_rs, step_o, step_rs;       // kb = b_o*KK + b_rs, and BK in the same digits

    __device__ BackwardInputGather(const float* grad_y_, const float* weight_, const ConvGeometry& g_,
                                   int block_m, int block_n_, int k_begin)
        : grad_y(grad_y_), weight(weight_), g(g_), block_n(block_n_) {
        __shared__ int4 row_table[BM];
        for (int row = threadIdx.x; row < BM; row += T::THREADS) {
            const int HW = g.H * g.W, m = block_m + row;
            const int n = m / HW, hw = m - n * HW, h = hw / g.W, w = hw - h * g.W;
            // h + pad_h < 0 only in a stride phase, whose stride is 1: the division stays exact.
            const int qh = (h + g.pad_h) / g.stride_h, qw = (w + g.pad_w) / g.stride_w;
            const int rem = (h + g.pad_h - qh * g.stride_h) * g.stride_w + (w + g.pad_w - qw * g.stride_w);
            const bool inside = m < g.N * HW;
            row_table[row] = int4{inside ? n * g.O * g.OH * g.OW : 0, inside ? qh : OUT_OF_IMAGE, qw, rem};
        }
        __syncthreads();
        rows = row_table;
        dil_q_h = g.dil_h / g.stride_h;
        dil_rem_h = g.dil_h - dil_q_h * g.stride_h;
        dil_q_w = g.dil_w / g.stride_w;
        dil_rem_w = g.dil_w - dil_q_w * g.stride_w;
        tap.start(k_begin + a_slice.k, g.KH, g.KW);
        tap_h = quotient_remainder(tap.r * g.dil_h, g.stride_h);
        tap_w = quotient_remainder(tap.s * g.dil_w, g.stride_w);
        b_k = threadIdx.x % BK;
        b_col = threadIdx.x / BK;
        const int KK = g.KH * g.KW, kb = k_begin + b_k;
        b_o = kb / KK;
        b_rs = kb - b_o * KK;
        step_o = BK / KK;
        step_rs = BK - step_o * KK;
    }

    __device__ static QuotientRemainder quotient_remainder(int value, int stride) {
        return QuotientRemainder{value / stride, value - value / stride * stride};
    }

    __device__ __forceinline__ void next_tap() {
        if (++tap.s == g.KW) {
            tap.s = 0;
            tap_w = QuotientRemainder{0, 0};
            tap_h.add(dil_q_h, dil_rem_h, g.stride_h);
            if (++tap.r == g.KH) {
                tap.r = 0;
                tap_h = QuotientRemainder{0, 0};
                ++tap.outer;
            }
        } else {
            tap_w.add(dil_q_w, dil_rem_w, g.stride_w);
        }
    }

    __device__ void load_a(int k0, int k_end, float (&a)[T::A_LOADS]) {
        const int P = g.OH * g.OW;
        const int4 pixel = rows[a_slice.row];
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int oh = pixel.y - tap_h.q, ow = pixel.z - tap_w.q;
            const bool hit = k0 + a_slice.k + i < k_end && pixel.w == tap_h.rem * g.stride_w + tap_w.rem &&
                             (unsigned)oh < (unsigned)g.OH && (unsigned)ow < (unsigned)g.OW;
            a[i] = hit ? __ldg(grad_y + pixel.x + tap.outer * P + oh * g.OW + ow) : 0.f;
            next_tap();
        }
#pragma unroll
        for (int i = 0; i < BK - T::A_LOADS; ++i) next_tap();  // the other threads' runs of this step
    }

    __device__ void load_b(int k0, int k_end, float (&b)[T::B_LOADS]) {
        const int KK = g.KH * g.KW, weight_offset = b_o * g.C * KK + b_rs;
        const bool k_inside = k0 + b_k < k_end;
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int c = block_n + b_col + i * T::LANES;
            b[i] = (k_inside && c < g.C) ? __ldg(weight + weight_offset + c * KK) : 0.f;
        }
        b_rs += step_rs;
        b_o += step_o;
        if (b_rs >= KK) { b_rs -= KK; ++b_o; }
    }

    __device__ void store_a(float (*As)[BM + PAD], const float (&a)[T::A_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) As[a_slice.k + i][a_slice.row] = a[i];
    }
    __device__ void store_b(float (*Bs)[BN + PAD], const float (&b)[T::B_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) Bs[b_k][b_col + i * T::LANES] = b[i];
    }
};

// Weight gradient. K runs over output pixels k = (n, oh, ow), one k per thread per step (consecutive
// threads, consecutive pixels); A[o, k] = grad_y[n, o, oh, ow] for LANES-spaced rows o, and
// B[k, j] = x at tap j = (c, r, s) of pixel k for B_LOADS consecutive columns j. The taps of the block's
// BN columns never change, so they are worked out once into a table in shared memory (kept in registers,
// they would crowd out the accumulators of the 128x128 tile).
template <int BM, int BN, int TM, int TN>
struct BackwardWeightGather {
    using T = Tile<BM, BN, TM, TN>;
    const float* __restrict__ x;
    const float* __restrict__ grad_y;
    ConvGeometry g;
    const int4* taps;              // per tile column: {c*H*W + (r*dh - ph)*W + s*dw - pw, r*dh - ph, s*dw - pw}
    int k_lane, row, block_m;      // this thread's k within a step; its first A row
    int b_col;                     // its first B column within the tile (B_LOADS consecutive ones)
    int n, oh, ow;                 // the pixel k = k0 + k_lane of the current step
    int step_n, step_oh, step_ow;  // BK in the same digits

    __device__ BackwardWeightGather(const float* x_, const float* grad_y_, const ConvGeometry& g_,
                                    int block_m_, int block_n, int k_begin)
        : x(x_), grad_y(grad_y_), g(g_), block_m(block_m_) {
        __shared__ int4 tap_table[BN];
        for (int column = threadIdx.x; column < BN; column += T::THREADS) {
            const int j = block_n + column, KK = g.KH * g.KW;
            const int c = j / KK, r = (j - c * KK) / g.KW, s = j - c * KK - r * g.KW;
            const int dh = j < g.C * KK ? r * g.dil_h - g.pad_h : OUT_OF_IMAGE, dw = s * g.dil_w - g.pad_w;
            tap_table[column] = int4{c * g.H * g.W + dh * g.W + dw, dh, dw, 0};
        }
        __syncthreads();
        taps = tap_table;
        k_lane = threadIdx.x % BK;
        row = threadIdx.x / BK;
        b_col = row * T::B_LOADS;
        const int P = g.OH * g.OW, k = k_begin + k_lane;
        n = k / P;
        oh = (k - n * P) / g.OW;
        ow = k - n * P - oh * g.OW;
        step_n = BK / P;
        step_oh = (BK - step_n * P) / g.OW;
        step_ow = BK - step_n * P - step_oh * g.OW;
    }

    __device__ void load_a(int k0, int k_end, float (&a)[T::A_LOADS]) const {
        const int P = g.OH * g.OW;
        const bool k_inside = k0 + k_lane < k_end;
        const int grad_y_offset = n * g.O * P + oh * g.OW + ow;
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int o = block_m + row + i * T::LANES;
            a[i] = (k_inside && o < g.O) ? __ldg(grad_y + grad_y_offset + o * P) : 0.f;
        }
    }

    // Then B, of the same pixel; moves on to the next step's pixel.
    __device__ void load_b(int k0, int k_end, float (&b)[T::B_LOADS]) {
        const bool k_inside = k0 + k_lane < k_end;
        const int h0 = oh * g.stride_h, w0 = ow * g.stride_w, pixel = n * g.C * g.H * g.W + h0 * g.W + w0;
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int4 tap = taps[b_col + i];
            const int h = h0 + tap.y, w = w0 + tap.z;
            const bool inside = k_inside && (unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W;
            b[i] = inside ? __ldg(x + pixel + tap.x) : 0.f;
        }
        ow += step_ow;
        if (ow >= g.OW) { ow -= g.OW; ++oh; }
        oh += step_oh;
        if (oh >= g.OH) { oh -= g.OH; ++n; }
        n += step_n;
    }

    __device__ void store_a(float (*As)[BM + PAD], const float (&a)[T::A_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) As[k_lane][row + i * T::LANES] = a[i];
    }
    __device__ void store_b(float (*Bs)[BN + PAD], const float (&b)[T::B_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) Bs[k_lane][b_col + i] = b[i];
    }
};

// ---------------------------------------------------------------------------------------------------
// The shared main loop: acc (TM x TN per thread) = A[tile rows, k_begin:k_end] @ B[k_begin:k_end, tile cols]
// ---------------------------------------------------------------------------------------------------
// acc += As[KK_BEGIN:KK_END, the thread's rows]^T @ Bs[KK_BEGIN:KK_END, its columns], from shared memory.
template <int BM, int BN, int TM, int TN, int KK_BEGIN, int KK_END>
__device__ __forceinline__ void multiply_slices(const float (*As)[BM + PAD], const float (*Bs)[BN + PAD],
                                                float (&acc)[TM][TN]) {
    using T = Tile<BM, BN, TM, TN>;
    const int tx = threadIdx.x % T::THREADS_X, ty = threadIdx.x / T::THREADS_X;
#pragma unroll
    for (int kk = KK_BEGIN; kk < KK_END; ++kk) {
        float a[TM], b[TN];
#pragma unroll
        for (int group = 0; group < TM / 4; ++group) {
            const float4 v = *reinterpret_cast<const float4*>(&As[kk][group * T::ROW_GROUP + ty * 4]);
            a[group * 4 + 0] = v.x; a[group * 4 + 1] = v.y; a[group * 4 + 2] = v.z; a[group * 4 + 3] = v.w;
        }
#pragma unroll
        for (int group = 0; group < TN / 4; ++group) {
            const float4 v = *reinterpret_cast<const float4*>(&Bs[kk][group * T::COL_GROUP + tx * 4]);
            b[group * 4 + 0] = v.x; b[group * 4 + 1] = v.y; b[group * 4 + 2] = v.z; b[group * 4 + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// The next step's A slice is fetched while the first half of this step multiplies, and its B slice while
// the second half does, each stored into the other buffer as soon as it is no longer needed in registers:
// only one of the two is ever held, which keeps the 128x128 tiles within 128 registers.
template <int BM, int BN, int TM, int TN, class Gather>
__device__ __forceinline__ void multiply_tile(Gather& gather, int k_begin, int k_end, float (&acc)[TM][TN]) {
    using T = Tile<BM, BN, TM, TN>;
    __shared__ __align__(16) float As[2][BK][BM + PAD];
    __shared__ __align__(16) float Bs[2][BK][BN + PAD];

#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
    if (k_begin >= k_end) return;  // the same for the whole block

    float a_next[T::A_LOADS], b_next[T::B_LOADS];
    gather.load_a(k_begin, k_end, a_next);
    gather.store_a(As[0], a_next);
    gather.load_b(k_begin, k_end, b_next);
    gather.store_b(Bs[0], b_next);
    __syncthreads();

    int buffer = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        // The other buffer was last read before the previous barrier, so it is free to overwrite.
        if (more) gather.load_a(k0 + BK, k_end, a_next);
        multiply_slices<BM, BN, TM, TN, 0, BK / 2>(As[buffer], Bs[buffer], acc);
        if (more) {
            gather.store_a(As[buffer ^ 1], a_next);
            gather.load_b(k0 + BK, k_end, b_next);
        }
        multiply_slices<BM, BN, TM, TN, BK / 2, BK>(As[buffer], Bs[buffer], acc);
        if (more) gather.store_b(Bs[buffer ^ 1], b_next);
        __syncthreads();
        buffer ^= 1;
    }
}

// Thread (tx, ty) owns rows  group*ROW_GROUP + ty*4 + {0..3}  and columns  group*COL_GROUP + tx*4 + {0..3}.
template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ int tile_row(int i) {
    using T = Tile<BM, BN, TM, TN>;
    return (i / 4) * T::ROW_GROUP + (threadIdx.x / T::THREADS_X) * 4 + i % 4;
}
template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ int tile_col(int j) {
    using T = Tile<BM, BN, TM, TN>;
    return (j / 4) * T::COL_GROUP + (threadIdx.x % T::THREADS_X) * 4 + j % 4;
}

// Rows are pixels m = (n, p) of an NCHW output with `cols` channels and `plane` = pixels per image.
// When plane % 4 == 0 a thread's 4 consecutive rows are 4 consecutive floats of one image: one float4.
template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void store_nchw(const float (&acc)[TM][TN], float* __restrict__ out,
                                           int block_m, int block_n, int rows, int cols, int plane) {
#pragma unroll
    for (int group = 0; group < TM / 4; ++group) {
        const int m0 = block_m + tile_row<BM, BN, TM, TN>(group * 4);
        if (plane % 4 == 0) {
            if (m0 >= rows) continue;
            const int n = m0 / plane, p = m0 - n * plane;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int col = block_n + tile_col<BM, BN, TM, TN>(j);
                if (col < cols)
                    *reinterpret_cast<float4*>(out + (n * cols + col) * plane + p) =
                        make_float4(acc[group * 4][j], acc[group * 4 + 1][j], acc[group * 4 + 2][j], acc[group * 4 + 3][j]);
            }
        } else {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int m = m0 + q;
                if (m >= rows) continue;
                const int n = m / plane, p = m - n * plane;
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const int col = block_n + tile_col<BM, BN, TM, TN>(j);
                    if (col < cols) out[(n * cols + col) * plane + p] = acc[group * 4 + q][j];
                }
            }
        }
    }
}

// Row-major (rows, cols) output: the weight gradient (O, C*KH*KW).
template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void store_row_major(const float (&acc)[TM][TN], float* __restrict__ out,
                                                int block_m, int block_n, int rows, int cols) {
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = block_m + tile_row<BM, BN, TM, TN>(i);
        if (row >= rows) continue;
#pragma unroll
        for (int group = 0; group < TN / 4; ++group) {
            const int col0 = block_n + tile_col<BM, BN, TM, TN>(group * 4);
            if (cols % 4 == 0) {
                if (col0 < cols)
                    *reinterpret_cast<float4*>(out + row * cols + col0) =
                        make_float4(acc[i][group * 4], acc[i][group * 4 + 1], acc[i][group * 4 + 2], acc[i][group * 4 + 3]);
            } else {
#pragma unroll
                for (int q = 0; q < 4; ++q)
                    if (col0 + q < cols) out[row * cols + col0 + q] = acc[i][group * 4 + q];
            }
        }
    }
}

// blockIdx.x walks the tiles with the column tile fastest, so blocks running side by side share
// their (large, gathered) A rows in L2; blockIdx.y is the K split.
template <int BM, int BN>
__device__ __forceinline__ void tile_origin(int cols, int& block_m, int& block_n) {
    const int col_tiles = (cols + BN - 1) / BN;
    block_n = (blockIdx.x % col_tiles) * BN;
    block_m = (blockIdx.x / col_tiles) * BM;
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void conv2d_forward_tile(const float* x, const float* weight, float* y,
                                                    const ConvGeometry& g, int k_per_split) {
    const int rows = g.N * g.OH * g.OW, K = g.C * g.KH * g.KW;
    int block_m, block_n;
    tile_origin<BM, BN>(g.O, block_m, block_n);
    const int k_begin = blockIdx.y * k_per_split, k_end = min(K, k_begin + k_per_split);
    float acc[TM][TN];
    ForwardGather<BM, BN, TM, TN> gather(x, weight, g, block_m, block_n, k_begin);
    multiply_tile<BM, BN, TM, TN>(gather, k_begin, k_end, acc);
    store_nchw<BM, BN, TM, TN>(acc, y + (long long)blockIdx.y * rows * g.O, block_m, block_n, rows, g.O, g.OH * g.OW);
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void conv2d_backward_input_tile(const float* grad_y, const float* weight, float* grad_x,
                                                           const ConvGeometry& g, int k_per_split) {
    const int rows = g.N * g.H * g.W, K = g.O * g.KH * g.KW;
    int block_m, block_n;
    tile_origin<BM, BN>(g.C, block_m, block_n);
    const int k_begin = blockIdx.y * k_per_split, k_end = min(K, k_begin + k_per_split);
    float acc[TM][TN];
    BackwardInputGather<BM, BN, TM, TN> gather(grad_y, weight, g, block_m, block_n, k_begin);
    multiply_tile<BM, BN, TM, TN>(gather, k_begin, k_end, acc);
    store_nchw<BM, BN, TM, TN>(acc, grad_x + (long long)blockIdx.y * rows * g.C, block_m, block_n, rows, g.C, g.H * g.W);
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void conv2d_backward_weight_tile(const float* x, const float* grad_y, float* grad_weight,
                                                            const ConvGeometry& g, int k_per_split) {
    const int rows = g.O, cols = g.C * g.KH * g.KW, K = g.N * g.OH * g.OW;
    int block_m, block_n;
    tile_origin<BM, BN>(cols, block_m, block_n);
    const int k_begin = blockIdx.y * k_per_split, k_end = min(K, k_begin + k_per_split);
    float acc[TM][TN];
    BackwardWeightGather<BM, BN, TM, TN> gather(x, grad_y, g, block_m, block_n, k_begin);
    multiply_tile<BM, BN, TM, TN>(gather, k_begin, k_end, acc);
    store_row_major<BM, BN, TM, TN>(acc, grad_weight + (long long)blockIdx.y * rows * cols, block_m, block_n, rows, cols);
}

// ---------------------------------------------------------------------------------------------------
// Entry points: one per (GEMM, tile shape). The suffix is the block tile, rows x columns.
// ---------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_forward_256x32(const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ y, CONV_PARAMS) {
    conv2d_forward_tile<256, 32, 8, 4>(x, weight, y, CONV_GEOMETRY, k_per_split);
}
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_forward_128x64(const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ y, CONV_PARAMS) {
    conv2d_forward_tile<128, 64, 8, 4>(x, weight, y, CONV_GEOMETRY, k_per_split);
}
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_forward_128x128(const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ y, CONV_PARAMS) {
    conv2d_forward_tile<128, 128, 8, 8>(x, weight, y, CONV_GEOMETRY, k_per_split);
}

extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_input_256x32(const float* __restrict__ grad_y, const float* __restrict__ weight,
                             float* __restrict__ grad_x, CONV_PARAMS) {
    conv2d_backward_input_tile<256, 32, 8, 4>(grad_y, weight, grad_x, CONV_GEOMETRY, k_per_split);
}
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_input_128x64(const float* __restrict__ grad_y, const float* __restrict__ weight,
                             float* __restrict__ grad_x, CONV_PARAMS) {
    conv2d_backward_input_tile<128, 64, 8, 4>(grad_y, weight, grad_x, CONV_GEOMETRY, k_per_split);
}
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_input_128x128(const float* __restrict__ grad_y, const float* __restrict__ weight,
                              float* __restrict__ grad_x, CONV_PARAMS) {
    conv2d_backward_input_tile<128, 128, 8, 8>(grad_y, weight, grad_x, CONV_GEOMETRY, k_per_split);
}

extern "C" __global__ void __launch_bounds__(128, 4)
conv2d_backward_weight_32x128(const float* __restrict__ x, const float* __restrict__ grad_y,
                              float* __restrict__ grad_weight, CONV_PARAMS) {
    conv2d_backward_weight_tile<32, 128, 4, 8>(x, grad_y, grad_weight, CONV_GEOMETRY, k_per_split);
}
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_weight_64x128(const float* __restrict__ x, const float* __restrict__ grad_y,
                              float* __restrict__ grad_weight, CONV_PARAMS) {
    conv2d_backward_weight_tile<64, 128, 4, 8>(x, grad_y, grad_weight, CONV_GEOMETRY, k_per_split);
}
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_weight_128x128(const float* __restrict__ x, const float* __restrict__ grad_y,
                               float* __restrict__ grad_weight, CONV_PARAMS) {
    conv2d_backward_weight_tile<128, 128, 8, 8>(x, grad_y, grad_weight, CONV_GEOMETRY, k_per_split);
}

// out[i] = sum over splits of partial[split, i]: finishes a K-split GEMM in a fixed order.
// i is 64-bit: near size = 2^31 - 1, i + gridDim.x * blockDim.x would overflow an int.
extern "C" __global__ void split_k_sum(const float* __restrict__ partial, float* __restrict__ out, int size, int splits) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x) {
        float total = 0.f;
        for (int split = 0; split < splits; ++split) total += partial[(long long)split * size + i];
        out[i] = total;
    }
}
