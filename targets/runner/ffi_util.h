// Helpers shared by runner.cc and hanasc_model.cc (header-only, C++17, tvm-ffi API only).
#ifndef HANASC_FFI_UTIL_H_
#define HANASC_FFI_UTIL_H_

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>

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

}  // namespace hanasc

#endif  // HANASC_FFI_UTIL_H_
