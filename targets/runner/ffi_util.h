// Helpers shared by runner.cc and hanasc_model.cc (header-only, C++17, tvm-ffi API only): file reading,
// output flattening, and the CUDA set-up (runtime library, precompiled kernels, VM devices).
#ifndef HANASC_FFI_UTIL_H_
#define HANASC_FFI_UTIL_H_

#include <dlfcn.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace hanasc {

[[noreturn]] inline void Fail(const std::string& msg) { throw std::runtime_error(msg); }

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The tensors of what main returned (a tensor, or nested tuples of tensors), in order.
inline void Flatten(const tvm::ffi::Any& value, std::vector<tvm::ffi::Tensor>* out) {
  if (auto t = value.try_cast<tvm::ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.try_cast<tvm::ffi::Array<tvm::ffi::Any>>()) {
    for (const tvm::ffi::Any& item : *arr) Flatten(item, out);
  } else {
    Fail("main returned something that is not a tensor or a tuple of tensors");
  }
}

// Bytes of a dense tensor.
inline int64_t TensorBytes(const tvm::ffi::Tensor& t) {
  int64_t n = (t.dtype().bits * t.dtype().lanes + 7) / 8;
  for (int64_t d : t.shape()) n *= d;
  return n;
}

// CUDA: load libtvm_runtime_cuda.so (the CUDA device API and module loader; it links libcudart and
// libcuda, present on the device only). Global symbols, as the model's CUDA module needs them.
inline void LoadCudaRuntime(const std::string& library) {
  if (!dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
    const char* why = dlerror();
    Fail("cannot load " + library + ": " + (why ? why : "unknown error"));
  }
}

// CUDA: hand TVM the precompiled kernels (binary: a cubin) instead of compiling the CUDA source model.so
// embeds when it is loaded (which needs Python + nvcc/NVRTC). When source is given, the source TVM passes in
// must be it: the kernels were compiled from it. The callback is process-wide: register it right before
// loading the model it serves.
inline void ServeCudaKernels(std::string binary, std::string source) {
  tvm::ffi::Function::SetGlobal(
      "tvm_callback_cuda_compile",
      tvm::ffi::Function::FromTyped([binary, source](tvm::ffi::String code) -> tvm::ffi::Bytes {
        if (!source.empty() && std::string(code) != source) {
          Fail("the CUDA source in the model does not match the kernel source the kernels were built from");
        }
        return tvm::ffi::Bytes(binary);
      }),
      true);
}

// vm_initialization: (device type, id, allocator: 2 = pooled), then the host device when the model runs on
// a GPU.
inline void InitializeVm(const tvm::ffi::Module& vm, bool cuda) {
  tvm::ffi::Function init = vm->GetFunction("vm_initialization").value();
  if (cuda) {
    init(static_cast<int>(kDLCUDA), 0, 2, static_cast<int>(kDLCPU), 0, 2);
  } else {
    init(static_cast<int>(kDLCPU), 0, 2);
  }
}

}  // namespace hanasc

#endif  // HANASC_FFI_UTIL_H_
