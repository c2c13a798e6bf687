#pragma once
// Element types the kernels accept. Bindings map torch dtypes to these; kernel files never see torch.

namespace autogaze {

enum class DType : int { kFloat32, kBFloat16, kFloat16 };

}  // namespace autogaze
