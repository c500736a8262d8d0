// The Python module mft_engine._C. Importing it loads this library, whose static initializers
// (registration.cpp, cpu_impl.cpp) register the mft ops with the PyTorch dispatcher. Besides that it
// exposes only the CPU path switch, with the plain Python C API (an op returning str would be awkward
// for torch.compile and is not data):
//   _C.cpu_path() -> str                 the active path: "avx512", "avx2" or "scalar"
//   _C.supported_cpu_paths() -> list[str] paths this CPU can run, narrowest first
//   _C.set_cpu_path(name: str) -> None    switch the path for later op calls ("auto" = widest);
//                                         ValueError if unknown or unsupported here
//   _C.cached_memory() -> int             bytes the kernels' block cache holds (csrc/include/mft/memory.h)
//   _C.release_cached_memory() -> int     frees them; returns the bytes released
// The path is resolved at import from MFT_CPU_PATH (scalar|avx2|avx512|auto); a bad value makes the
// import fail with ImportError.
#include <Python.h>

#include <exception>
#include <string>

#include "cpu_path.h"
#include "mft/memory.h"

namespace {

PyObject* cpu_path(PyObject*, PyObject*) { return PyUnicode_FromString(mft::active_cpu_path()); }

PyObject* supported_cpu_paths(PyObject*, PyObject*) {
  const auto names = mft::supported_cpu_paths();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(names.size()));
  if (!list) return nullptr;
  for (std::size_t i = 0; i < names.size(); ++i) {
    PyObject* s = PyUnicode_FromString(names[i].c_str());
    if (!s) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), s);
  }
  return list;
}

PyObject* set_cpu_path(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (!name) return nullptr;
  try {
    mft::set_cpu_path(name);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* cached_memory(PyObject*, PyObject*) { return PyLong_FromSize_t(mft::cached_bytes()); }

PyObject* release_cached_memory(PyObject*, PyObject*) { return PyLong_FromSize_t(mft::release_cached_blocks()); }

PyMethodDef methods[] = {
    {"cpu_path", cpu_path, METH_NOARGS, "cpu_path() -> str: the active CPU path (avx512, avx2 or scalar)."},
    {"supported_cpu_paths", supported_cpu_paths, METH_NOARGS,
     "supported_cpu_paths() -> list[str]: the CPU paths this machine can run, narrowest first."},
    {"set_cpu_path", set_cpu_path, METH_O,
     "set_cpu_path(name: str) -> None: use this CPU path (scalar, avx2, avx512 or auto) for later op calls."},
    {"cached_memory", cached_memory, METH_NOARGS,
     "cached_memory() -> int: bytes of freed large buffers the kernels keep for reuse."},
    {"release_cached_memory", release_cached_memory, METH_NOARGS,
     "release_cached_memory() -> int: frees the kernels' cached buffers; returns the bytes released."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "mft_engine's C++ kernels: importing this registers the torch.ops.mft operators.", -1,
                          methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  try {
    mft::init_cpu_path();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ImportError, e.what());
    return nullptr;
  }
  return PyModule_Create(&module_def);
}
