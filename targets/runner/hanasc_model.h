/*
 * hanasc_model.h - the C API of a hanasc bundle (pure C, C89-compatible declarations).
 *
 * A bundle built by hanasc for a CPU or GPU target ships this header, lib/libhanasc_model.so and
 * lib/libhanasc_model.a. Both libraries hold this API (implemented in C++ over the TVM runtime; no
 * C++ exception ever crosses it) and an embedded copy of the bundle's model, so an application can
 *
 *   - open the bundle folder it was deployed with:   hanasc_model_create("/opt/model", &m)
 *   - or use the model linked into it:               hanasc_model_create_embedded(&m)
 *
 * The embedded model is the bundle's model.so (bytes linked in as read-only data) with its tensor
 * description; hanasc_model_create_embedded() writes it to a private file under $TMPDIR (or /tmp),
 * loads it with the TVM runtime and removes the file at once. Both libraries still need the TVM runtime
 * (libtvm_runtime.so and libtvm_ffi.so, shipped in the bundle's rt/ folder) and, for the static one,
 * libstdc++, libdl and libpthread at link time: the pkg-config and CMake files of the bundle say so.
 *
 * Tensors are dense, C order, in the dtype the bundle states (inputs are float32). Every function that
 * can fail returns a hanasc_status; on failure, hanasc_model_last_error() describes it (a per-thread
 * string, valid until the next hanasc call on that thread). A model is not safe to run from two threads
 * at the same time; create one model per thread instead.
 */
#ifndef HANASC_MODEL_H_
#define HANASC_MODEL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HANASC_MODEL_API __attribute__((visibility("default")))
#else
#define HANASC_MODEL_API
#endif

#define HANASC_MODEL_MAX_NDIM 8

/* Result of a call: HANASC_OK, or the kind of failure (details in hanasc_model_last_error()). */
typedef enum hanasc_status {
  HANASC_OK = 0,
  HANASC_ERROR_ARGUMENT = 1,    /* a NULL pointer, an index out of range */
  HANASC_ERROR_LOAD = 2,        /* the bundle folder or the embedded model could not be loaded */
  HANASC_ERROR_BUFFER_SIZE = 3, /* a buffer's size is not the tensor's size in bytes */
  HANASC_ERROR_RUN = 4          /* the TVM runtime failed while running the model */
} hanasc_status;

/* An opaque loaded model. */
typedef struct hanasc_model hanasc_model;

/* One input or output tensor. Strings and the shape belong to the model (valid until destroy). */
typedef struct hanasc_tensor_info {
  const char* name;     /* e.g. "x" (inputs: the ONNX input names), "output0" */
  const char* dtype;    /* "float32", "int8", ... */
  int32_t ndim;         /* number of dimensions (<= HANASC_MODEL_MAX_NDIM) */
  const int64_t* shape; /* ndim sizes */
  size_t nbytes;        /* the buffer size run() expects for it */
} hanasc_tensor_info;

/* Load the bundle in folder bundle_dir (its model.so and model.io). */
HANASC_MODEL_API hanasc_status hanasc_model_create(const char* bundle_dir, hanasc_model** out);

/* Load the model embedded in the library this program links. */
HANASC_MODEL_API hanasc_status hanasc_model_create_embedded(hanasc_model** out);

HANASC_MODEL_API int32_t hanasc_model_num_inputs(const hanasc_model* model);  /* -1 when model is NULL */
HANASC_MODEL_API int32_t hanasc_model_num_outputs(const hanasc_model* model); /* -1 when model is NULL */

HANASC_MODEL_API hanasc_status hanasc_model_input_info(const hanasc_model* model, int32_t index,
                                                       hanasc_tensor_info* info);
HANASC_MODEL_API hanasc_status hanasc_model_output_info(const hanasc_model* model, int32_t index,
                                                        hanasc_tensor_info* info);

/* Run the model once. inputs[i] points to input i (input_sizes[i] bytes, which must equal its nbytes);
 * outputs[i] receives output i (output_sizes[i] bytes, which must equal its nbytes). The buffers belong
 * to the caller; nothing is written to the outputs unless the call returns HANASC_OK. */
HANASC_MODEL_API hanasc_status hanasc_model_run(hanasc_model* model, const void* const* inputs,
                                                const size_t* input_sizes, void* const* outputs,
                                                const size_t* output_sizes);

/* The last failure on this thread, or "" when none. */
HANASC_MODEL_API const char* hanasc_model_last_error(void);

/* Free a model (NULL is allowed). */
HANASC_MODEL_API void hanasc_model_destroy(hanasc_model* model);

#ifdef __cplusplus
}
#endif

#endif /* HANASC_MODEL_H_ */
