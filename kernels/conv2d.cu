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
//   weight gradient  grad_w[o, j]    = sum_k  A[o, k] * B[k, j]     o              k = (n,oh,ow) j = (c,r,s)
//                    A[o, k] = grad_y[n, o, oh, ow]   B = im2col(x) transposed: x[n, c, oh*sh-ph+r*dh, ...]
//
// Tiling, once. Output C (rows x cols) is cut into BM x BN tiles, one per thread block; the shared
// dimension K is walked BK = 8 at a time. Per step the block's threads copy an BM x BK slice of A and a
// BK x BN slice of B into shared memory (doing the im2col index arithmetic on the way, zeros for padding
// and for taps that miss), wait, and then every thread multiplies from shared memory into its own
// TM x TN block of accumulators held in registers (register blocking: each value read from shared memory
// is used TM or TN times). Two shared buffers alternate: the next slice is fetched from global memory
// into registers while the current one is being multiplied, and stored after, so one __syncthreads()
// per step suffices. A thread's TM rows come in groups of 4 consecutive rows spaced BM/(TM/4) apart
// (likewise its columns), so that it reads them as float4 and neighbouring threads read neighbouring
// words (no shared-memory bank conflicts). Loads are arranged so that consecutive threads read
// consecutive addresses of the image: along m (ow) for the forward and input-gradient gathers, along
// k (ow again) for the weight gradient. When the output has few tiles but K is long (the weight gradient
// always; deep layers at low resolution), gridDim.y splits K: each split writes its partial product to
// a workspace and split_k_sum adds them (deterministic, unlike atomics).
//
// Tile shapes (chosen in minseg/cuda.py by the output's column count, or row count for the weight
// gradient), all 128 or 256 threads:  256x32 (8x4 per thread), 128x64 (8x4), 128x128 (8x8),
// 32x128 (4x8), 64x128 (4x8).
//
// Roofline. Each of the three GEMMs costs 2*N*O*P*C*KK FLOPs and must at least read/write
// x, weight and y once: 4*(N*C*H*W + O*C*KK + N*O*P) bytes. (8,64,360,480) -> 64, 3x3: 102 GFLOP over
// 0.71 GB = 144 FLOP/byte, far right of an H100's ridge (about 60 TFLOP/s float32 without tensor cores
// / 3 TB/s = 20 FLOP/byte): compute bound, so the work is keeping the FMA units fed. Per BK step a
// 128x128 tile moves (128+128)*8 floats into shared memory for 128*128*8 FMAs (32 FMAs per float
// loaded), and each thread reads TM+TN = 16 floats from shared memory for 64 FMAs.
//
// Offsets are 32-bit ints: minseg/cuda.py refuses arrays of 2^31 elements or more.

#define BK 8        // depth of one K step
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
    static constexpr int LANES = THREADS / BK;          // threads sharing one k when loading along rows
    static constexpr int ROW_GROUP = BM / (TM / 4);     // distance between a thread's groups of 4 rows
    static constexpr int COL_GROUP = BN / (TN / 4);
    static_assert(TM % 4 == 0 && TN % 4 == 0, "a thread owns whole float4 groups");
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK, "tile must split evenly");
};

// ---------------------------------------------------------------------------------------------------
// Gathers: where each thread's share of an A and a B slice lives in global memory, and where it goes
// in shared memory. Everything that does not depend on k is worked out once, in the constructor.
// ---------------------------------------------------------------------------------------------------

// Forward. A = im2col(x), loaded along m (consecutive threads = consecutive output pixels);
// B = weight viewed as (O, K), loaded along k (a weight row is contiguous in k).
template <int BM, int BN, int TM, int TN>
struct ForwardGather {
    using T = Tile<BM, BN, TM, TN>;
    const float* __restrict__ x;
    const float* __restrict__ weight;
    ConvGeometry g;
    int a_k, a_row;                                   // this thread's k within a step, first tile row
    int a_image[T::A_LOADS], a_h0[T::A_LOADS], a_w0[T::A_LOADS];
    int b_k, b_col;                                   // B is tiny and regular: nothing to precompute
    int block_n;

    __device__ ForwardGather(const float* x_, const float* weight_, const ConvGeometry& g_, int block_m, int block_n_)
        : x(x_), weight(weight_), g(g_), block_n(block_n_) {
        const int P = g.OH * g.OW, M = g.N * P;
        a_k = threadIdx.x / T::LANES;
        a_row = threadIdx.x % T::LANES;
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int m = block_m + a_row + i * T::LANES;
            const int n = m / P, p = m - n * P, oh = p / g.OW, ow = p - oh * g.OW;
            const bool inside = m < M;
            a_image[i] = inside ? n * g.C * g.H * g.W : 0;
            a_h0[i] = inside ? oh * g.stride_h - g.pad_h : OUT_OF_IMAGE;
            a_w0[i] = ow * g.stride_w - g.pad_w;
        }
        b_k = threadIdx.x % BK;
        b_col = threadIdx.x / BK;
    }

    __device__ void load(int k0, int k_end, float (&a)[T::A_LOADS], float (&b)[T::B_LOADS]) const {
        const int KK = g.KH * g.KW;
        const int k = k0 + a_k;
        const int c = k / KK, rs = k - c * KK, r = rs / g.KW, s = rs - r * g.KW;
        const int channel = c * g.H * g.W, dh = r * g.dil_h, dw = s * g.dil_w;
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int h = a_h0[i] + dh, w = a_w0[i] + dw;
            const bool inside = k < k_end && (unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W;
            a[i] = inside ? __ldg(x + a_image[i] + channel + h * g.W + w) : 0.f;
        }
        const int kb = k0 + b_k, K = g.C * KK;
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int o = block_n + b_col + i * (T::THREADS / BK);
            b[i] = (kb < k_end && o < g.O) ? __ldg(weight + o * K + kb) : 0.f;
        }
    }

    __device__ void store(float (*As)[BM + PAD], float (*Bs)[BN + PAD],
                          const float (&a)[T::A_LOADS], const float (&b)[T::B_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) As[a_k][a_row + i * T::LANES] = a[i];
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) Bs[b_k][b_col + i * (T::THREADS / BK)] = b[i];
    }
};

// Input gradient. A = grad_y gathered by the transposed index map, loaded along m (input pixels);
// B[k = (o,r,s), c] = weight[o, c, r, s], loaded along k.
template <int BM, int BN, int TM, int TN>
struct BackwardInputGather {
    using T = Tile<BM, BN, TM, TN>;
    const float* __restrict__ grad_y;
    const float* __restrict__ weight;
    ConvGeometry g;
    int a_k, a_row;
    int a_image[T::A_LOADS], a_h[T::A_LOADS], a_w[T::A_LOADS];   // n*O*P, h + ph, w + pw
    int b_k, b_col;
    int block_n;

    __device__ BackwardInputGather(const float* grad_y_, const float* weight_, const ConvGeometry& g_,
                                   int block_m, int block_n_)
        : grad_y(grad_y_), weight(weight_), g(g_), block_n(block_n_) {
        const int HW = g.H * g.W, M = g.N * HW;
        a_k = threadIdx.x / T::LANES;
        a_row = threadIdx.x % T::LANES;
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int m = block_m + a_row + i * T::LANES;
            const int n = m / HW, hw = m - n * HW, h = hw / g.W, w = hw - h * g.W;
            const bool inside = m < M;
            a_image[i] = inside ? n * g.O * g.OH * g.OW : 0;
            a_h[i] = inside ? h + g.pad_h : OUT_OF_IMAGE;
            a_w[i] = w + g.pad_w;
        }
        b_k = threadIdx.x % BK;
        b_col = threadIdx.x / BK;
    }

    __device__ void load(int k0, int k_end, float (&a)[T::A_LOADS], float (&b)[T::B_LOADS]) const {
        const int KK = g.KH * g.KW;
        const int k = k0 + a_k;
        const int o = k / KK, rs = k - o * KK, r = rs / g.KW, s = rs - r * g.KW;
        const int plane = o * g.OH * g.OW, dh = r * g.dil_h, dw = s * g.dil_w;
        const bool unit_stride = g.stride_h == 1 && g.stride_w == 1;
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            // Output pixel oh reads input row oh*sh - ph + r*dh; solve for oh given this input row h.
            const int th = a_h[i] - dh, tw = a_w[i] - dw;
            int oh = th, ow = tw;
            bool hit = true;
            if (!unit_stride) {
                oh = th / g.stride_h;
                ow = tw / g.stride_w;
                hit = th >= 0 && tw >= 0 && oh * g.stride_h == th && ow * g.stride_w == tw;
            }
            hit = hit && k < k_end && (unsigned)oh < (unsigned)g.OH && (unsigned)ow < (unsigned)g.OW;
            a[i] = hit ? __ldg(grad_y + a_image[i] + plane + oh * g.OW + ow) : 0.f;
        }
        const int kb = k0 + b_k;
        const int ob = kb / KK, rsb = kb - ob * KK;
        const int weight_offset = ob * g.C * KK + rsb;
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int c = block_n + b_col + i * (T::THREADS / BK);
            b[i] = (kb < k_end && c < g.C) ? __ldg(weight + weight_offset + c * KK) : 0.f;
        }
    }

    __device__ void store(float (*As)[BM + PAD], float (*Bs)[BN + PAD],
                          const float (&a)[T::A_LOADS], const float (&b)[T::B_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) As[a_k][a_row + i * T::LANES] = a[i];
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) Bs[b_k][b_col + i * (T::THREADS / BK)] = b[i];
    }
};

// Weight gradient. K runs over output pixels (n, oh, ow); both slices are loaded along k, so one
// decomposition of k per step serves A (grad_y, contiguous in ow) and B (x gathered at the taps).
template <int BM, int BN, int TM, int TN>
struct BackwardWeightGather {
    using T = Tile<BM, BN, TM, TN>;
    const float* __restrict__ x;
    const float* __restrict__ grad_y;
    ConvGeometry g;
    int k_lane, row;                   // this thread's k within a step; its first tile row / column
    int block_m;
    int b_channel[T::B_LOADS], b_dh[T::B_LOADS], b_dw[T::B_LOADS];   // c*H*W, r*dh - ph, s*dw - pw

    __device__ BackwardWeightGather(const float* x_, const float* grad_y_, const ConvGeometry& g_,
                                    int block_m_, int block_n)
        : x(x_), grad_y(grad_y_), g(g_), block_m(block_m_) {
        const int KK = g.KH * g.KW, cols = g.C * KK;
        k_lane = threadIdx.x % BK;
        row = threadIdx.x / BK;
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int j = block_n + row + i * (T::THREADS / BK);
            const int c = j / KK, rs = j - c * KK, r = rs / g.KW, s = rs - r * g.KW;
            const bool inside = j < cols;
            b_channel[i] = inside ? c * g.H * g.W : 0;
            b_dh[i] = inside ? r * g.dil_h - g.pad_h : OUT_OF_IMAGE;
            b_dw[i] = s * g.dil_w - g.pad_w;
        }
    }

    __device__ void load(int k0, int k_end, float (&a)[T::A_LOADS], float (&b)[T::B_LOADS]) const {
        const int P = g.OH * g.OW;
        const int k = k0 + k_lane;
        const bool k_inside = k < k_end;
        const int n = k / P, p = k - n * P, oh = p / g.OW, ow = p - oh * g.OW;
        const int grad_y_offset = n * g.O * P + p, image = n * g.C * g.H * g.W;
        const int h0 = oh * g.stride_h, w0 = ow * g.stride_w;
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) {
            const int o = block_m + row + i * (T::THREADS / BK);
            a[i] = (k_inside && o < g.O) ? __ldg(grad_y + grad_y_offset + o * P) : 0.f;
        }
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) {
            const int h = h0 + b_dh[i], w = w0 + b_dw[i];
            const bool inside = k_inside && (unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W;
            b[i] = inside ? __ldg(x + image + b_channel[i] + h * g.W + w) : 0.f;
        }
    }

    __device__ void store(float (*As)[BM + PAD], float (*Bs)[BN + PAD],
                          const float (&a)[T::A_LOADS], const float (&b)[T::B_LOADS]) const {
#pragma unroll
        for (int i = 0; i < T::A_LOADS; ++i) As[k_lane][row + i * (T::THREADS / BK)] = a[i];
#pragma unroll
        for (int i = 0; i < T::B_LOADS; ++i) Bs[k_lane][row + i * (T::THREADS / BK)] = b[i];
    }
};

// ---------------------------------------------------------------------------------------------------
// The shared main loop: acc (TM x TN per thread) = A[tile rows, k_begin:k_end] @ B[k_begin:k_end, tile cols]
// ---------------------------------------------------------------------------------------------------
template <int BM, int BN, int TM, int TN, class Gather>
__device__ __forceinline__ void multiply_tile(const Gather& gather, int k_begin, int k_end, float (&acc)[TM][TN]) {
    using T = Tile<BM, BN, TM, TN>;
    __shared__ __align__(16) float As[2][BK][BM + PAD];
    __shared__ __align__(16) float Bs[2][BK][BN + PAD];
    const int tx = threadIdx.x % T::THREADS_X, ty = threadIdx.x / T::THREADS_X;

#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
    if (k_begin >= k_end) return;  // the same for the whole block

    float a_next[T::A_LOADS], b_next[T::B_LOADS];
    gather.load(k_begin, k_end, a_next, b_next);
    gather.store(As[0], Bs[0], a_next, b_next);
    __syncthreads();

    int buffer = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        if (more) gather.load(k0 + BK, k_end, a_next, b_next);  // in flight while we multiply
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[TM], b[TN];
#pragma unroll
            for (int group = 0; group < TM / 4; ++group) {
                const float4 v = *reinterpret_cast<const float4*>(&As[buffer][kk][group * T::ROW_GROUP + ty * 4]);
                a[group * 4 + 0] = v.x; a[group * 4 + 1] = v.y; a[group * 4 + 2] = v.z; a[group * 4 + 3] = v.w;
            }
#pragma unroll
            for (int group = 0; group < TN / 4; ++group) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[buffer][kk][group * T::COL_GROUP + tx * 4]);
                b[group * 4 + 0] = v.x; b[group * 4 + 1] = v.y; b[group * 4 + 2] = v.z; b[group * 4 + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // The other buffer was last read before the previous barrier, so it is free to overwrite.
        if (more) gather.store(As[buffer ^ 1], Bs[buffer ^ 1], a_next, b_next);
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
    multiply_tile<BM, BN, TM, TN>(ForwardGather<BM, BN, TM, TN>(x, weight, g, block_m, block_n), k_begin, k_end, acc);
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
    multiply_tile<BM, BN, TM, TN>(BackwardInputGather<BM, BN, TM, TN>(grad_y, weight, g, block_m, block_n),
                                  k_begin, k_end, acc);
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
    multiply_tile<BM, BN, TM, TN>(BackwardWeightGather<BM, BN, TM, TN>(x, grad_y, g, block_m, block_n),
                                  k_begin, k_end, acc);
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
extern "C" __global__ void split_k_sum(const float* __restrict__ partial, float* __restrict__ out, int size, int splits) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < size; i += gridDim.x * blockDim.x) {
        float total = 0.f;
        for (int split = 0; split < splits; ++split) total += partial[(long long)split * size + i];
        out[i] = total;
    }
}
