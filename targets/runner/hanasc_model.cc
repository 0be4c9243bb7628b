// The C API of a hanasc bundle (hanasc_model.h) over the TVM runtime: the same tvm-ffi calls as runner.cc
// (load model.so, vm_load_executable, vm_initialization, call main). Every entry point catches everything:
// no C++ exception crosses the C boundary; failures become a status and a per-thread message.
//
// The tensor description comes from model.io (written by hanasc beside model.so), one line per tensor:
//   hanasc.io/1
//   input x float32 4 1 3 32 32
//   output output0 float32 2 1 10
// A GPU bundle (jetson-orin) adds the line "device cuda" after the first: its model runs on CUDA device 0,
// with the precompiled kernels kernels.cubin (checked against kernels.cu, the source model.so embeds), as
// the runner's --device cuda does; libtvm_runtime_cuda.so is loaded from beside libtvm_runtime.so.
// Built with -DHANASC_MODEL_EMBEDDED, the library also holds model.so and model.io as data (blob.S:
// hanasc_model_blob_* and hanasc_model_io_*) for hanasc_model_create_embedded(), and for a GPU bundle the
// kernels (hanasc_model_kernels_*, hanasc_model_kernel_source_*; empty for a CPU bundle).
#include "hanasc_model.h"

#include <dlfcn.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ffi_util.h"

namespace ffi = tvm::ffi;
using hanasc::Fail;
using hanasc::Flatten;
using hanasc::ReadFile;

extern "C" void* TVMBackendAllocWorkspace(int, int, uint64_t, int, int);

#ifdef HANASC_MODEL_EMBEDDED
extern "C" const char hanasc_model_blob_start[];
extern "C" const char hanasc_model_blob_end[];
extern "C" const char hanasc_model_io_start[];
extern "C" const char hanasc_model_io_end[];
extern "C" const char hanasc_model_kernels_start[];
extern "C" const char hanasc_model_kernels_end[];
extern "C" const char hanasc_model_kernel_source_start[];
extern "C" const char hanasc_model_kernel_source_end[];
#endif

namespace {

// A reference into libtvm_runtime, so that linkers with --as-needed keep it: model.so and the globals
// used below (runtime.TVMTensor*) are registered by it.
void* volatile keep_runtime = reinterpret_cast<void*>(&TVMBackendAllocWorkspace);

thread_local std::string last_error;

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  size_t nbytes = 0;
};

size_t DTypeBytes(const std::string& dtype) {
  static const char* const kinds[] = {"float", "int", "uint", "bfloat", "bool"};
  for (const char* kind : kinds) {
    std::string prefix(kind);
    if (dtype.compare(0, prefix.size(), prefix) == 0 && dtype.size() > prefix.size()) {
      int bits = std::atoi(dtype.c_str() + prefix.size());
      if (bits > 0 && bits % 8 == 0) return static_cast<size_t>(bits / 8);
    }
  }
  if (dtype == "bool") return 1;
  Fail("unsupported dtype '" + dtype + "'");
}

DLDataType ToDLType(const std::string& dtype) {
  DLDataType t{kDLFloat, 32, 1};
  if (dtype.compare(0, 4, "uint") == 0) {
    t.code = kDLUInt;
  } else if (dtype.compare(0, 3, "int") == 0) {
    t.code = kDLInt;
  } else if (dtype.compare(0, 6, "bfloat") == 0) {
    t.code = kDLBfloat;
  } else if (dtype.compare(0, 5, "float") != 0) {
    Fail("unsupported input dtype '" + dtype + "'");
  }
  t.bits = static_cast<uint8_t>(DTypeBytes(dtype) * 8);
  return t;
}

// The precompiled CUDA kernels of a GPU bundle: the cubin and the source it was compiled from.
struct CudaKernels {
  std::string binary;
  std::string source;
};

// Where a model comes from: its library file, its model.io text, a name for messages, and (GPU bundles)
// how to get its kernels.
struct ModelSource {
  std::string library;
  std::string io;
  std::string where;
  std::function<CudaKernels()> kernels;
};

void ParseIo(const std::string& text, const std::string& where, std::vector<Tensor>* inputs,
             std::vector<Tensor>* outputs, bool* cuda) {
  std::istringstream lines(text);
  std::string line;
  if (!std::getline(lines, line) || line != "hanasc.io/1") Fail(where + ": not a hanasc.io/1 file");
  *cuda = false;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string role;
    if (line.compare(0, 7, "device ") == 0) {
      std::string device = line.substr(7);
      if (device != "cpu" && device != "cuda") Fail(where + ": unknown device '" + device + "' (cpu or cuda)");
      *cuda = device == "cuda";
      continue;
    }
    Tensor t;
    int ndim = -1;
    fields >> role >> t.name >> t.dtype >> ndim;
    if ((role != "input" && role != "output") || ndim < 0 || ndim > HANASC_MODEL_MAX_NDIM) {
      Fail(where + ": bad line '" + line + "'");
    }
    t.nbytes = DTypeBytes(t.dtype);
    for (int i = 0; i < ndim; ++i) {
      int64_t d = -1;
      if (!(fields >> d) || d < 0) Fail(where + ": bad shape in '" + line + "'");
      t.shape.push_back(d);
      t.nbytes *= static_cast<size_t>(d);
    }
    (role == "input" ? inputs : outputs)->push_back(t);
  }
  if (inputs->empty() || outputs->empty()) Fail(where + ": no inputs or no outputs");
}

// Turns whatever a body throws into a status and the thread's last error.
template <typename F>
hanasc_status Guard(hanasc_status on_error, F body) {
  try {
    last_error.clear();
    body();
    return HANASC_OK;
  } catch (const std::bad_alloc&) {
    last_error = "out of memory";
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown error";
  }
  if (last_error.empty()) last_error = "unknown error";
  return on_error;
}

std::string TempPath() {
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/hanasc_model_XXXXXX.so";
  int fd = mkstemps(&path[0], 3);
  if (fd < 0) Fail("cannot create a temporary file for the embedded model (" + path + ")");
  close(fd);
  return path;
}

// libtvm_runtime_cuda.so beside the libtvm_runtime.so this process uses (the bundle's rt/), else by name.
std::string CudaRuntimePath() {
  Dl_info info{};
  const char* name = "libtvm_runtime_cuda.so";
  if (dladdr(reinterpret_cast<void*>(&TVMBackendAllocWorkspace), &info) == 0 || info.dli_fname == nullptr) {
    return name;
  }
  std::string runtime(info.dli_fname);
  size_t slash = runtime.rfind('/');
  return slash == std::string::npos ? name : runtime.substr(0, slash + 1) + name;
}

// Serialises the CUDA set-up: the kernel callback is process-wide and is read while a model loads.
std::mutex& CudaLoadMutex() {
  static std::mutex mutex;
  return mutex;
}

}  // namespace

struct hanasc_model {
  std::vector<Tensor> inputs;
  std::vector<Tensor> outputs;
  ffi::Optional<ffi::Module> lib;  // optional: an ffi::Module has no empty state
  ffi::Optional<ffi::Module> vm;
  ffi::Optional<ffi::Function> main;
  std::vector<ffi::Any> args;  // input tensors on the model's device, allocated once
  bool cuda = false;
  DLDevice dev{kDLCPU, 0};

  void Load(const ModelSource& source) {
    if (cuda) {
      dev = DLDevice{kDLCUDA, 0};
      CudaKernels kernels = source.kernels();
      std::lock_guard<std::mutex> lock(CudaLoadMutex());
      hanasc::LoadCudaRuntime(CudaRuntimePath());
      hanasc::ServeCudaKernels(kernels.binary, kernels.source);
      lib = ffi::Module::LoadFromFile(source.library);
    } else {
      lib = ffi::Module::LoadFromFile(source.library);
    }
    vm = lib.value()->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    hanasc::InitializeVm(vm.value(), cuda);
    main = vm.value()->GetFunction("main").value();
    ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
    for (const Tensor& t : inputs) {
      args.emplace_back(alloc(ffi::Shape(t.shape), ToDLType(t.dtype), dev, ffi::Optional<ffi::String>()));
    }
  }

  void Run(const void* const* in, const size_t* in_sizes, void* const* out, const size_t* out_sizes) {
    static const ffi::Function copy_from = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
    static const ffi::Function copy_to = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
    for (size_t i = 0; i < inputs.size(); ++i) {
      copy_from(args[i], const_cast<void*>(in[i]), static_cast<int64_t>(in_sizes[i]));
    }
    std::vector<ffi::AnyView> views(args.begin(), args.end());
    ffi::Any ret;
    main.value().CallPacked(views.data(), static_cast<int32_t>(views.size()), &ret);
    std::vector<ffi::Tensor> results;
    Flatten(ret, &results);
    if (results.size() != outputs.size()) {
      Fail("the model returned " + std::to_string(results.size()) + " outputs; model.io lists " +
           std::to_string(outputs.size()));
    }
    for (size_t i = 0; i < results.size(); ++i) {
      if (static_cast<size_t>(hanasc::TensorBytes(results[i])) != outputs[i].nbytes) {
        Fail("output " + outputs[i].name + " has another size than model.io says");
      }
    }
    for (size_t i = 0; i < results.size(); ++i) {
      copy_to(results[i], out[i], static_cast<int64_t>(out_sizes[i]));
    }
  }
};

namespace {

hanasc_status Create(hanasc_model** out, const ModelSource& source) {
  if (out == nullptr) {
    last_error = "hanasc_model_create: out is NULL";
    return HANASC_ERROR_ARGUMENT;
  }
  *out = nullptr;
  hanasc_model* model = nullptr;
  hanasc_status status = Guard(HANASC_ERROR_LOAD, [&] {
    model = new hanasc_model();
    ParseIo(source.io, source.where, &model->inputs, &model->outputs, &model->cuda);
    model->Load(source);
  });
  if (status != HANASC_OK) {
    delete model;
    last_error = source.where + ": " + last_error;
    return status;
  }
  *out = model;
  return HANASC_OK;
}

hanasc_status CheckSizes(const char* what, const std::vector<Tensor>& tensors, const void* const* buffers,
                         const size_t* sizes) {
  if (buffers == nullptr || sizes == nullptr) {
    last_error = std::string("hanasc_model_run: ") + what + " or their sizes are NULL";
    return HANASC_ERROR_ARGUMENT;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (buffers[i] == nullptr) {
      last_error = std::string("hanasc_model_run: ") + what + " " + std::to_string(i) + " is NULL";
      return HANASC_ERROR_ARGUMENT;
    }
    if (sizes[i] != tensors[i].nbytes) {
      last_error = std::string("hanasc_model_run: ") + what + " " + std::to_string(i) + " ('" + tensors[i].name +
                   "') is " + std::to_string(sizes[i]) + " bytes; it needs " + std::to_string(tensors[i].nbytes);
      return HANASC_ERROR_BUFFER_SIZE;
    }
  }
  return HANASC_OK;
}

hanasc_status Info(const hanasc_model* model, const std::vector<Tensor>* list, int32_t index,
                   hanasc_tensor_info* info) {
  if (model == nullptr || info == nullptr || index < 0 || static_cast<size_t>(index) >= list->size()) {
    last_error = "tensor info: NULL model or info, or index " + std::to_string(index) + " out of range";
    return HANASC_ERROR_ARGUMENT;
  }
  const Tensor& t = (*list)[index];
  info->name = t.name.c_str();
  info->dtype = t.dtype.c_str();
  info->ndim = static_cast<int32_t>(t.shape.size());
  info->shape = t.shape.data();
  info->nbytes = t.nbytes;
  return HANASC_OK;
}

}  // namespace

extern "C" {

hanasc_status hanasc_model_create(const char* bundle_dir, hanasc_model** out) {
  if (bundle_dir == nullptr) {
    last_error = "hanasc_model_create: bundle_dir is NULL";
    return HANASC_ERROR_ARGUMENT;
  }
  std::string dir(bundle_dir);
  std::string io;
  hanasc_status status = Guard(HANASC_ERROR_LOAD, [&] { io = ReadFile(dir + "/model.io"); });
  if (status != HANASC_OK) return status;
  auto kernels = [dir] { return CudaKernels{ReadFile(dir + "/kernels.cubin"), ReadFile(dir + "/kernels.cu")}; };
  return Create(out, ModelSource{dir + "/model.so", io, dir, kernels});
}

hanasc_status hanasc_model_create_embedded(hanasc_model** out) {
#ifdef HANASC_MODEL_EMBEDDED
  std::string path;
  hanasc_status status = Guard(HANASC_ERROR_LOAD, [&] {
    path = TempPath();
    std::ofstream file(path, std::ios::binary);
    file.write(hanasc_model_blob_start, hanasc_model_blob_end - hanasc_model_blob_start);
    if (!file.flush()) Fail("cannot write " + path);
  });
  if (status != HANASC_OK) {
    if (!path.empty()) std::remove(path.c_str());
    return status;
  }
  std::string io(hanasc_model_io_start, hanasc_model_io_end - hanasc_model_io_start);
  auto kernels = [] {
    return CudaKernels{std::string(hanasc_model_kernels_start, hanasc_model_kernels_end),
                       std::string(hanasc_model_kernel_source_start, hanasc_model_kernel_source_end)};
  };
  status = Create(out, ModelSource{path, io, "embedded model", kernels});
  std::remove(path.c_str());  // loaded (mapped) or failed: the file is no longer needed
  return status;
#else
  (void)out;
  last_error = "hanasc_model_create_embedded: this library was built without an embedded model";
  return HANASC_ERROR_LOAD;
#endif
}

int32_t hanasc_model_num_inputs(const hanasc_model* model) {
  return model ? static_cast<int32_t>(model->inputs.size()) : -1;
}

int32_t hanasc_model_num_outputs(const hanasc_model* model) {
  return model ? static_cast<int32_t>(model->outputs.size()) : -1;
}

hanasc_status hanasc_model_input_info(const hanasc_model* model, int32_t index, hanasc_tensor_info* info) {
  return Info(model, model ? &model->inputs : nullptr, index, info);
}

hanasc_status hanasc_model_output_info(const hanasc_model* model, int32_t index, hanasc_tensor_info* info) {
  return Info(model, model ? &model->outputs : nullptr, index, info);
}

hanasc_status hanasc_model_run(hanasc_model* model, const void* const* inputs, const size_t* input_sizes,
                               void* const* outputs, const size_t* output_sizes) {
  if (model == nullptr) {
    last_error = "hanasc_model_run: model is NULL";
    return HANASC_ERROR_ARGUMENT;
  }
  hanasc_status status = CheckSizes("input", model->inputs, inputs, input_sizes);
  if (status == HANASC_OK) status = CheckSizes("output", model->outputs, outputs, output_sizes);
  if (status != HANASC_OK) return status;
  return Guard(HANASC_ERROR_RUN, [&] { model->Run(inputs, input_sizes, outputs, output_sizes); });
}

const char* hanasc_model_last_error(void) { return last_error.c_str(); }

void hanasc_model_destroy(hanasc_model* model) {
  try {
    delete model;
  } catch (...) {
  }
}

}  // extern "C"
