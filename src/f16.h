/* f16.h — IEEE half precision and bfloat16 to and from fp32, for the file
 * formats that store them (GGUF F16 and Q8_0 scales, safetensors F16/BF16).
 * Rounding is to nearest, ties to even, as numpy and PyTorch do. */
#ifndef NF_F16_H
#define NF_F16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | mant << 13); /* inf, nan */
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);
        float v = (float)mant * (1.0f / 16777216.0f); /* subnormal: mant * 2^-24 */
        return sign ? -v : v;
    }
    return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
}

static inline uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000, abs = u & 0x7FFFFFFF;
    if (abs >= 0x7F800000u) return (uint16_t)(sign | 0x7C00 | (abs > 0x7F800000u ? 0x200 : 0)); /* inf, nan */
    if (abs >= 0x477FF000u) return (uint16_t)(sign | 0x7C00); /* rounds to beyond 65504: inf */
    if (abs < 0x38800000u) {                                  /* below 2^-14: a subnormal half, or zero */
        if (abs < 0x33000000u) return (uint16_t)sign;         /* below half of the smallest subnormal */
        uint32_t mant = (abs & 0x7FFFFF) | 0x800000, shift = 126 - (abs >> 23); /* value = mant 2^(e-150) */
        uint32_t half = mant >> shift, rest = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((abs >> 13) - (112u << 10)), rest = abs & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

static inline float bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40); /* nan stays nan */
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

#endif
