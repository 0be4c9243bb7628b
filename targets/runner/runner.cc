// hanasc bundle runner: load a TVM Relax library (model.so), run it on raw inputs, write the outputs,
// print the median latency. Uses only the tvm-ffi C++ API plus globals registered by libtvm_runtime
// (the aarch64 wheels ship no tvm/runtime headers that compile stand-alone).
//
//   runner ./model.so --input in.bin:1x3x224x224 [--input ...] [--output out.bin]
//          [--runs 20] [--warmup 3] [--device cpu|cuda]
//          [--kernels kernels.cubin --kernel-source kernels.cu]     (cuda: precompiled kernels)
//
// Inputs are raw little-endian float32, C order. Outputs are written as raw bytes of their own dtype, one
// after the other, and described on stdout ("output 0 float32 1x1000"). The latency line reads
//   latency_ms median=1.234 min=1.200 max=1.400 runs=20 device=cpu
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ffi_util.h"

namespace ffi = tvm::ffi;
using hanasc::Fail;
using hanasc::Flatten;
using hanasc::ReadFile;

namespace {

struct InputSpec {
  std::string path;
  std::vector<int64_t> shape;
};

struct Options {
  std::string model;
  std::vector<InputSpec> inputs;
  std::string output;
  int runs = 20;
  int warmup = 3;
  std::string device = "cpu";
  std::string kernels;
  std::string kernel_source;
};

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string dim;
  while (std::getline(ss, dim, 'x')) {
    if (dim.empty()) Fail("bad shape '" + text + "' (expected e.g. 1x3x224x224)");
    shape.push_back(std::stoll(dim));
  }
  if (shape.empty()) Fail("empty shape");
  return shape;
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--input") {
      std::string spec = value();
      size_t colon = spec.rfind(':');
      if (colon == std::string::npos) Fail("--input expects FILE:SHAPE, got '" + spec + "'");
      opt.inputs.push_back({spec.substr(0, colon), ParseShape(spec.substr(colon + 1))});
    } else if (arg == "--output") {
      opt.output = value();
    } else if (arg == "--runs") {
      opt.runs = std::max(1, std::stoi(value()));
    } else if (arg == "--warmup") {
      opt.warmup = std::max(0, std::stoi(value()));
    } else if (arg == "--device") {
      opt.device = value();
    } else if (arg == "--kernels") {
      opt.kernels = value();
    } else if (arg == "--kernel-source") {
      opt.kernel_source = value();
    } else if (!arg.empty() && arg[0] != '-' && opt.model.empty()) {
      opt.model = arg;
    } else {
      Fail("unknown argument '" + arg + "'");
    }
  }
  if (opt.model.empty() || opt.inputs.empty()) {
    Fail("usage: runner ./model.so --input FILE:SHAPE [--output FILE] [--runs N] [--device cpu|cuda]");
  }
  if (opt.device != "cpu" && opt.device != "cuda") Fail("--device must be cpu or cuda");
  return opt;
}

std::string ExeDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// CUDA: the runtime's CUDA library from the runner's rt/ and, when given, the precompiled kernels.
void SetupCuda(const Options& opt) {
  hanasc::LoadCudaRuntime(ExeDir() + "/rt/libtvm_runtime_cuda.so");
  if (opt.kernels.empty()) return;
  std::string binary = ReadFile(opt.kernels);
  std::string source = opt.kernel_source.empty() ? std::string() : ReadFile(opt.kernel_source);
  hanasc::ServeCudaKernels(binary, source);
}

ffi::Tensor ToDevice(const InputSpec& spec, DLDevice dev) {
  std::string bytes = ReadFile(spec.path);
  int64_t count = 1;
  for (int64_t d : spec.shape) count *= d;
  if (static_cast<int64_t>(bytes.size()) != count * 4) {
    Fail(spec.path + ": " + std::to_string(bytes.size()) + " bytes, shape needs " + std::to_string(count * 4));
  }
  static ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
  static ffi::Function copy_from = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
  DLDataType f32{kDLFloat, 32, 1};
  ffi::Tensor t = alloc(ffi::Shape(spec.shape), f32, dev, ffi::Optional<ffi::String>()).cast<ffi::Tensor>();
  copy_from(t, static_cast<void*>(bytes.data()), static_cast<int64_t>(bytes.size()));
  return t;
}

std::string DTypeName(DLDataType t) {
  const char* code = t.code == kDLFloat ? "float" : t.code == kDLInt ? "int" : t.code == kDLUInt ? "uint" : "other";
  return std::string(code) + std::to_string(t.bits);
}

std::string HostBytes(const ffi::Tensor& t, int64_t* nbytes) {
  static ffi::Function copy_to = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  *nbytes = hanasc::TensorBytes(t);
  std::string buf(*nbytes, '\0');
  copy_to(t, static_cast<void*>(buf.data()), *nbytes);
  return buf;
}

int Run(const Options& opt) {
  bool cuda = opt.device == "cuda";
  if (cuda) SetupCuda(opt);
  DLDevice dev{cuda ? kDLCUDA : kDLCPU, 0};
  ffi::Module lib = ffi::Module::LoadFromFile(opt.model);
  ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  hanasc::InitializeVm(vm, cuda);
  ffi::Function fmain = vm->GetFunction("main").value();

  std::vector<ffi::Any> args;
  for (const InputSpec& spec : opt.inputs) args.emplace_back(ToDevice(spec, dev));
  std::vector<ffi::AnyView> views(args.begin(), args.end());
  ffi::Function sync = ffi::Function::GetGlobalRequired("runtime.Device_StreamSync");
  auto call = [&]() {
    ffi::Any ret;
    fmain.CallPacked(views.data(), static_cast<int32_t>(views.size()), &ret);
    if (cuda) sync(dev, static_cast<void*>(nullptr));
    return ret;
  };

  ffi::Any result = call();
  for (int i = 0; i < opt.warmup; ++i) call();
  std::vector<double> times;
  for (int i = 0; i < opt.runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    call();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }

  std::vector<ffi::Tensor> outputs;
  Flatten(result, &outputs);
  std::ofstream out;
  if (!opt.output.empty()) {
    out.open(opt.output, std::ios::binary);
    if (!out) Fail("cannot write " + opt.output);
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    int64_t nbytes = 0;
    std::string bytes = HostBytes(outputs[i], &nbytes);
    if (out) out.write(bytes.data(), nbytes);
    std::string shape;
    for (int64_t d : outputs[i].shape()) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    std::printf("output %zu %s %s\n", i, DTypeName(outputs[i].dtype()).c_str(), shape.c_str());
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  size_t n = sorted.size();
  double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  std::printf("latency_ms median=%.4f min=%.4f max=%.4f runs=%zu device=%s\n", median, sorted.front(),
              sorted.back(), n, opt.device.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "runner: error: %s\n", e.what());
    return 1;
  }
}
