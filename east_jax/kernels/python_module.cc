// The Python extension module around the FFI handlers of sparse_conv_cpu.cc: it exposes
// each handler as a capsule (`forward`, `backward`) for jax.ffi.register_ffi_target, and
// the jaxlib version whose FFI headers it was built against (`jaxlib_version`).
// EAST_KERNELS_MODULE names the module (one per instruction-set level, targets.py).

#include <Python.h>

#include "xla/ffi/api/c_api.h"

extern "C" XLA_FFI_Error* EastSparseConvForward(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* EastSparseConvBackward(XLA_FFI_CallFrame* call_frame);

#define EAST_CONCAT_(a, b) a##b
#define EAST_CONCAT(a, b) EAST_CONCAT_(a, b)
#define EAST_STRING_(a) #a
#define EAST_STRING(a) EAST_STRING_(a)

namespace {

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, EAST_STRING(EAST_KERNELS_MODULE),
                       "east_jax's native sparse-convolution kernels (XLA FFI handlers).", -1};

bool AddCapsule(PyObject* module, const char* name, void* handler) {
  PyObject* capsule = PyCapsule_New(handler, nullptr, nullptr);
  return capsule != nullptr && PyModule_AddObject(module, name, capsule) == 0;
}

}  // namespace

PyMODINIT_FUNC EAST_CONCAT(PyInit_, EAST_KERNELS_MODULE)(void) {
  PyObject* module = PyModule_Create(&kModule);
  if (module == nullptr ||
      !AddCapsule(module, "forward", reinterpret_cast<void*>(EastSparseConvForward)) ||
      !AddCapsule(module, "backward", reinterpret_cast<void*>(EastSparseConvBackward)) ||
      PyModule_AddStringConstant(module, "jaxlib_version", EAST_STRING(EAST_JAXLIB_VERSION)) != 0) {
    Py_XDECREF(module);
    return nullptr;
  }
  return module;
}
