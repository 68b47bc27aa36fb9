// softmax_cross_entropy.cu: fused softmax + cross-entropy over the channels of (N, C, H, W) logits, float32.
//
// The NumPy twin is the cross_entropy Function in minseg/functional/loss.py: the same per-pixel
// log-sum-exp, target pick and masking, but as whole-array NumPy operations, each a full pass over
// memory. Here each pixel is one thread that does all of it in registers:
//
//   forward   loss[n,h,w]  = pixel_weight * (log sum_c exp(logits[n,c,h,w]) - logits[n,target,h,w])
//             pixel_weight = class_weight[target] (1 without class weights), 0 where target == ignore_index
//   backward  grad_logits[n,c,h,w] = grad_loss[n,h,w] * pixel_weight * (softmax_c(logits)[n,c,h,w] - [c == target])
//
// Threading. Thread t handles pixel t = n*H*W + h*W + w and walks the C channels, which lie H*W floats
// apart; at each channel the 32 threads of a warp read 32 consecutive floats (one 128-byte line), so
// every access is coalesced. A thread loads a chunk of its logits into registers (all of them when
// C <= 64: the _c16/_c32/_c64 variants; else 32 at a time) before it reduces them, so that a whole chunk
// of independent loads is in flight. Across chunks it keeps a running maximum and a sum of exponentials
// rescaled whenever the maximum grows: every logit is read once and exponentiated once. The backward
// needs the finished sum before it can write anything: for C <= 64 the logits stay in registers (one
// read); above that it reads them a second time (from L2 mostly).
//
// Non-finite logits. A NaN logit makes its pixel's loss and gradient NaN (the maximum below propagates
// NaN, where fmaxf would drop it). -inf is a real value (a masked class): it contributes exp(-inf) = 0,
// and while every logit so far is -inf the exponentials are taken relative to 0 instead of the maximum,
// so no exp(-inf - -inf) = NaN appears. A pixel whose logits are all -inf has loss NaN, as in PyTorch.
//
// Roofline. Per pixel the forward reads 4*C bytes of logits + 8 (int64 target) and writes 8; the
// backward reads 4*C + 12 and writes 4*C. At C = 32 that is about 0.26 FLOP/byte: purely memory bound,
// so the time to beat is bytes / bandwidth, with three passes over the logits for forward + backward
// (benchmarks/gpu.py reports the effective bandwidth of exactly that count).
//
// A target outside [0, C) that is not ignore_index makes that pixel's loss (and gradient) NaN rather than
// reading out of bounds: a wrong label shows up in the loss instead of silently.

#define PIXELS_PER_BLOCK 256  // one thread per pixel

__device__ __forceinline__ float negative_infinity() { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ float not_a_number() { return __int_as_float(0x7fffffff); }

// The class weight of a valid target; 0 for an ignored pixel and NaN for an invalid label, both of
// which set `skip`: their loss and gradient are that value and the logits need not be read.
__device__ __forceinline__ float weight_of(long long target, const float* class_weight, int use_class_weight,
                                           int C, long long ignore_index, bool& skip) {
    skip = true;
    if (target == ignore_index) return 0.f;
    if (target < 0 || target >= C) return not_a_number();
    skip = false;
    return use_class_weight ? class_weight[target] : 1.f;
}

// max(a, b) that returns NaN when either is NaN.
__device__ __forceinline__ float max_or_nan(float a, float b) { return (b > a || b != b) ? b : a; }

// What the exponentials are taken relative to: the maximum, or 0 while the maximum is -inf.
__device__ __forceinline__ float shift_of(float maximum) { return maximum == negative_infinity() ? 0.f : maximum; }

// The running reduction over one pixel's logits, CHUNK at a time:
// sum_exp = sum_c exp(logits[c] - shift_of(max)), and the target's logit on the way.
struct LogSumExp {
    float maximum, sum_exp, target_logit;  // start at -inf, 0, 0

    template <int CHUNK>
    __device__ __forceinline__ void add(const float (&v)[CHUNK], int c0, long long label) {
        float chunk_max = maximum;
#pragma unroll
        for (int i = 0; i < CHUNK; ++i) {
            chunk_max = max_or_nan(chunk_max, v[i]);
            if (c0 + i == label) target_logit = v[i];
        }
        const float shift = shift_of(chunk_max);
        sum_exp *= expf(shift_of(maximum) - shift);  // 0 * exp(..) stays 0 while maximum is -inf
#pragma unroll
        for (int i = 0; i < CHUNK; ++i) sum_exp += expf(v[i] - shift);
        maximum = chunk_max;
    }
};

// Logits c0 .. c0 + CHUNK - 1 of a pixel into registers; past C they read as -inf (exp = 0).
template <int CHUNK>
__device__ __forceinline__ void load_chunk(const float* column, int c0, int C, int HW, float (&v)[CHUNK]) {
#pragma unroll
    for (int i = 0; i < CHUNK; ++i) v[i] = c0 + i < C ? __ldg(column + (long long)(c0 + i) * HW) : negative_infinity();
}

template <int CHUNK>
__device__ __forceinline__ LogSumExp reduce_pixel(const float* column, int C, int HW, long long label) {
    LogSumExp reduction{negative_infinity(), 0.f, 0.f};
    for (int c0 = 0; c0 < C; c0 += CHUNK) {
        float v[CHUNK];
        load_chunk<CHUNK>(column, c0, C, HW, v);
        reduction.add<CHUNK>(v, c0, label);
    }
    return reduction;
}

template <int CHUNK>
__device__ __forceinline__ void softmax_cross_entropy_forward_pixel(
        const float* logits, const long long* target, const float* class_weight, int use_class_weight,
        float* loss, float* pixel_weight, int N, int C, int HW, long long ignore_index) {
    const long long pixel = (long long)blockIdx.x * PIXELS_PER_BLOCK + threadIdx.x;
    if (pixel >= (long long)N * HW) return;
    const long long n = pixel / HW, hw = pixel - n * HW;
    const long long label = target[pixel];
    bool skip;
    const float weight = weight_of(label, class_weight, use_class_weight, C, ignore_index, skip);
    pixel_weight[pixel] = weight;
    if (skip) {
        loss[pixel] = weight;
        return;
    }
    const LogSumExp r = reduce_pixel<CHUNK>(logits + n * C * HW + hw, C, HW, label);
    // (shift - target) first: 0 when the target holds the maximum and exact whenever it is close to it,
    // so a confident pixel's small loss is not lost in the rounding of max + log(sum).
    loss[pixel] = weight * ((shift_of(r.maximum) - r.target_logit) + logf(r.sum_exp));
}

// One pixel's backward with its C <= MAX_C logits held in registers (the loops unroll fully, so the
// array never leaves registers): read once, write once.
template <int MAX_C>
__device__ __forceinline__ void backward_in_registers(const float* column, float* grad_column, long long label,
                                                      float scale, int C, int HW) {
    float value[MAX_C];
    load_chunk<MAX_C>(column, 0, C, HW, value);
    float maximum = negative_infinity();
#pragma unroll
    for (int c = 0; c < MAX_C; ++c) maximum = max_or_nan(maximum, value[c]);
    const float shift = shift_of(maximum);
    float sum_exp = 0.f;
#pragma unroll
    for (int c = 0; c < MAX_C; ++c) {
        value[c] = expf(value[c] - shift);
        sum_exp += value[c];
    }
    const float scale_over_sum = scale / sum_exp;
#pragma unroll
    for (int c = 0; c < MAX_C; ++c)
        if (c < C) grad_column[(long long)c * HW] = fmaf(value[c], scale_over_sum, c == label ? -scale : 0.f);
}

// Any C: one pass for the maximum and the sum (chunked, as in the forward), a second to write.
__device__ __forceinline__ void backward_two_pass(const float* column, float* grad_column, long long label,
                                                  float scale, int C, int HW) {
    const LogSumExp r = reduce_pixel<32>(column, C, HW, label);
    const float shift = shift_of(r.maximum), scale_over_sum = scale / r.sum_exp;
#pragma unroll 8
    for (int c = 0; c < C; ++c) {
        const float p = expf(__ldg(column + (long long)c * HW) - shift);
        grad_column[(long long)c * HW] = fmaf(p, scale_over_sum, c == label ? -scale : 0.f);
    }
}

// MAX_C = 0 selects the two-pass version.
template <int MAX_C>
__device__ __forceinline__ void softmax_cross_entropy_backward_pixel(
        const float* logits, const long long* target, const float* class_weight, int use_class_weight,
        const float* grad_loss, float* grad_logits, int N, int C, int HW, long long ignore_index) {
    const long long pixel = (long long)blockIdx.x * PIXELS_PER_BLOCK + threadIdx.x;
    if (pixel >= (long long)N * HW) return;
    const long long n = pixel / HW, hw = pixel - n * HW;
    const long long label = target[pixel];
    bool skip;
    const float weight = weight_of(label, class_weight, use_class_weight, C, ignore_index, skip);
    const float* column = logits + n * C * HW + hw;
    float* grad_column = grad_logits + n * C * HW + hw;
    if (skip) {  // ignored pixels get exactly 0 (NaN for an invalid label)
        for (int c = 0; c < C; ++c) grad_column[(long long)c * HW] = weight;
        return;
    }
    const float scale = grad_loss[pixel] * weight;
    if constexpr (MAX_C > 0)
        backward_in_registers<MAX_C>(column, grad_column, label, scale, C, HW);
    else
        backward_two_pass(column, grad_column, label, scale, C, HW);
}

#define BACKWARD_PARAMS const float* __restrict__ logits, const long long* __restrict__ target, \
    const float* __restrict__ class_weight, int use_class_weight, const float* __restrict__ grad_loss, \
    float* __restrict__ grad_logits, int N, int C, int HW, long long ignore_index
#define BACKWARD_ARGS logits, target, class_weight, use_class_weight, grad_loss, grad_logits, N, C, HW, ignore_index

#define FORWARD_PARAMS const float* __restrict__ logits, const long long* __restrict__ target, \
    const float* __restrict__ class_weight, int use_class_weight, float* __restrict__ loss, \
    float* __restrict__ pixel_weight, int N, int C, int HW, long long ignore_index
#define FORWARD_ARGS logits, target, class_weight, use_class_weight, loss, pixel_weight, N, C, HW, ignore_index

// Entry points; minseg/cuda/cross_entropy.py picks the smallest _c<MAX_C> that holds C, else the plain
// (chunked, and for the backward two-pass) one.
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_forward(FORWARD_PARAMS) {
    softmax_cross_entropy_forward_pixel<32>(FORWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_forward_c16(FORWARD_PARAMS) {
    softmax_cross_entropy_forward_pixel<16>(FORWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_forward_c32(FORWARD_PARAMS) {
    softmax_cross_entropy_forward_pixel<32>(FORWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_forward_c64(FORWARD_PARAMS) {
    softmax_cross_entropy_forward_pixel<64>(FORWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_backward(BACKWARD_PARAMS) {
    softmax_cross_entropy_backward_pixel<0>(BACKWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_backward_c16(BACKWARD_PARAMS) {
    softmax_cross_entropy_backward_pixel<16>(BACKWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_backward_c32(BACKWARD_PARAMS) {
    softmax_cross_entropy_backward_pixel<32>(BACKWARD_ARGS);
}
extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK) softmax_cross_entropy_backward_c64(BACKWARD_PARAMS) {
    softmax_cross_entropy_backward_pixel<64>(BACKWARD_ARGS);
}
