#pragma once
// bfloat16 / float16 storage types for the CPU kernels, with float conversions that round to nearest
// even (bit-identical to torch's casts), so CPU kernels compute in float32 without torch headers.

#include <bit>
#include <cstdint>

namespace autogaze {

struct BFloat16 {
  uint16_t bits;
};
struct Float16 {
  uint16_t bits;
};

inline float to_float(float v) { return v; }

inline float to_float(BFloat16 v) { return std::bit_cast<float>(uint32_t{v.bits} << 16); }

inline float to_float(Float16 v) {
  const uint32_t sign = uint32_t{v.bits & 0x8000u} << 16;
  const uint32_t magnitude = v.bits & 0x7fffu;
  if (magnitude >= 0x7c00u)  // inf / nan: max exponent, keep the payload
    return std::bit_cast<float>(sign | 0x7f800000u | ((magnitude & 0x3ffu) << 13));
  if (magnitude < 0x0400u) {  // zero / subnormal: magnitude * 2^-24, exact in float
    const float value = static_cast<float>(magnitude) * 0x1p-24f;
    return sign ? -value : value;
  }
  return std::bit_cast<float>(sign | ((magnitude << 13) + (112u << 23)));  // rebias 15 -> 127
}

template <typename T> T from_float(float v);

template <> inline float from_float<float>(float v) { return v; }

template <> inline BFloat16 from_float<BFloat16>(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((bits >> 16) | 0x40u)};  // quiet nan
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return {static_cast<uint16_t>((bits + rounding) >> 16)};
}

template <> inline Float16 from_float<Float16>(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  uint32_t half;
  if (magnitude >= (143u << 23)) {  // >= 65536, inf or nan (65520..65536 overflow below)
    half = magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (magnitude < (113u << 23)) {  // < 2^-14: subnormal or zero
    // Adding 0.5 puts the 2^-24 unit in the last mantissa bit; the FPU rounds to nearest even.
    const float shifted = std::bit_cast<float>(magnitude) + 0.5f;
    half = std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(0.5f);
  } else {
    const uint32_t odd = (magnitude >> 13) & 1u;
    half = (magnitude - (112u << 23) + 0xfffu + odd) >> 13;  // rebias 127 -> 15, round to nearest even
  }
  return {static_cast<uint16_t>(sign | half)};
}

}  // namespace autogaze
