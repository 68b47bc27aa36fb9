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
// every access is coalesced, and the channel loop gives each thread many independent loads in flight.
// The forward keeps a running maximum and a running sum of exponentials (the sum is rescaled whenever
// the maximum grows), so it reads every logit exactly once and computes one exponential per logit. The
// backward needs the finished sum before it can write anything: for C <= 64 it keeps the pixel's logits
// in registers (one read, templates below); above that it reads them a second time (from L2 mostly).
//
// Roofline. Per pixel the forward reads 4*C bytes of logits + 8 (int64 target) and writes 8; the
// backward reads 4*C + 12 and writes 4*C. At C = 32 that is about 0.26 FLOP/byte: purely memory bound,
// so the time to beat is bytes / bandwidth: (64,32,360,480) moves 1.42 GB of logits per pass, about
// 3 x 1.42 GB = 4.2 GB for forward + backward, 1.5 ms at 2.9 TB/s.
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

extern "C" __global__ void __launch_bounds__(PIXELS_PER_BLOCK)
softmax_cross_entropy_forward(const float* __restrict__ logits, const long long* __restrict__ target,
                              const float* __restrict__ class_weight, int use_class_weight,
                              float* __restrict__ loss, float* __restrict__ pixel_weight,
                              int N, int C, int HW, long long ignore_index) {
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

    const float* column = logits + n * C * HW + hw;
    float running_max = negative_infinity(), sum_exp = 0.f, target_logit = 0.f;
#pragma unroll 8
    for (int c = 0; c < C; ++c) {
        const float v = __ldg(column + (long long)c * HW);
        if (c == label) target_logit = v;
        // Online log-sum-exp: one exponential per logit, no divergence. When v is the new maximum the old
        // sum is rescaled by exp(old max - v) and v contributes exp(0) = 1.
        const float larger = fmaxf(running_max, v), smaller = fminf(running_max, v);
        const float e = expf(smaller - larger);
        sum_exp = v > running_max ? fmaf(sum_exp, e, 1.f) : sum_exp + e;
        running_max = larger;
    }
    // (max - target) first: 0 when the target holds the maximum and exact whenever it is close to it,
    // so a confident pixel's small loss is not lost in the rounding of max + log(sum).
    loss[pixel] = weight * ((running_max - target_logit) + logf(sum_exp));
}

// One pixel's backward with its C <= MAX_C logits held in registers (the loops unroll fully, so the
// array never leaves registers): read once, write once.
template <int MAX_C>
__device__ __forceinline__ void backward_in_registers(const float* column, float* grad_column, long long label,
                                                      float scale, int C, int HW) {
    float value[MAX_C];
    float running_max = negative_infinity();
#pragma unroll
    for (int c = 0; c < MAX_C; ++c) {
        if (c < C) {
            value[c] = __ldg(column + (long long)c * HW);
            running_max = fmaxf(running_max, value[c]);
        }
    }
    float sum_exp = 0.f;
#pragma unroll
    for (int c = 0; c < MAX_C; ++c) {
        if (c < C) {
            value[c] = expf(value[c] - running_max);
            sum_exp += value[c];
        }
    }
    const float scale_over_sum = scale / sum_exp;
#pragma unroll
    for (int c = 0; c < MAX_C; ++c)
        if (c < C) grad_column[(long long)c * HW] = fmaf(value[c], scale_over_sum, c == label ? -scale : 0.f);
}

// Any C: one pass for the maximum and the sum (online, as in the forward), a second to write.
__device__ __forceinline__ void backward_two_pass(const float* column, float* grad_column, long long label,
                                                  float scale, int C, int HW) {
    float running_max = negative_infinity(), sum_exp = 0.f;
#pragma unroll 8
    for (int c = 0; c < C; ++c) {
        const float v = __ldg(column + (long long)c * HW);
        const float larger = fmaxf(running_max, v), smaller = fminf(running_max, v);
        const float e = expf(smaller - larger);
        sum_exp = v > running_max ? fmaf(sum_exp, e, 1.f) : sum_exp + e;
        running_max = larger;
    }
    const float scale_over_sum = scale / sum_exp;
#pragma unroll 8
    for (int c = 0; c < C; ++c) {
        const float p = expf(__ldg(column + (long long)c * HW) - running_max);
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

// Entry points; minseg/cuda.py picks the smallest _c<MAX_C> that holds C, else the plain (two-pass) one.
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
