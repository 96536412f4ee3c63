// SPDX-License-Identifier: GPL-2.0-or-later
//
// The plugin holds no Python symbols, so it loads into a plain `lmp` binary as well as into
// a Python process driving LAMMPS through the `lammps` module. Here we:
//   1. make sure a libpython is in the process: a Python host already has one (its
//      Py_IsInitialized is visible in the global scope); a plain lmp binary gets the
//      libpython recorded at build time (or $DEEPCOMP_LIBPYTHON) loaded with RTLD_GLOBAL;
//   2. load libdeepcomp_bridge.so from the plugin's directory; its undefined Python symbols
//      resolve against that libpython;
//   3. let the bridge start the interpreter if nobody has, pointed at the right environment.

#include "bridge_loader.h"

#include <cstdlib>
#include <dlfcn.h>
#include <string>
#include <sys/stat.h>

#ifndef DEEPCOMP_DEFAULT_LIBPYTHON
#define DEEPCOMP_DEFAULT_LIBPYTHON ""
#endif
#ifndef DEEPCOMP_LIBPYTHON_SONAME
#define DEEPCOMP_LIBPYTHON_SONAME ""
#endif

namespace deepcomp {

namespace {

BridgeAPI api;
bool api_ready = false;

bool file_exists(const std::string &path)
{
  struct stat st;
  return !path.empty() && stat(path.c_str(), &st) == 0;
}

std::string dirname_of(const std::string &path)
{
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string getenv_str(const char *name)
{
  const char *v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

bool ensure_libpython(std::string &error)
{
  if (dlsym(RTLD_DEFAULT, "Py_IsInitialized")) return true;    // Python host process

  std::string tried;
  for (const std::string &candidate :
       {getenv_str("DEEPCOMP_LIBPYTHON"), std::string(DEEPCOMP_DEFAULT_LIBPYTHON),
        std::string(DEEPCOMP_LIBPYTHON_SONAME)}) {
    if (candidate.empty()) continue;
    if (dlopen(candidate.c_str(), RTLD_NOW | RTLD_GLOBAL)) return true;
    const char *why = dlerror();
    tried += "\n  " + candidate + ": " + (why ? why : "unknown dlopen error");
  }
  error = "deepcomp: cannot load libpython into LAMMPS; set DEEPCOMP_LIBPYTHON to the libpython of "
          "the Python environment deepcomp-ase is installed in. Tried:" +
      tried;
  return false;
}

// <prefix>/pyvenv.cfg of a virtual environment holding site-packages, if any
std::string venv_python(const std::string &site_dir)
{
  // site_dir = <prefix>/lib/pythonX.Y/site-packages
  std::string prefix = dirname_of(dirname_of(dirname_of(site_dir)));
  if (!file_exists(prefix + "/pyvenv.cfg")) return std::string();
  for (const char *exe : {"/bin/python3", "/bin/python"})
    if (file_exists(prefix + exe)) return prefix + exe;
  return std::string();
}

}    // namespace

std::string plugin_directory()
{
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&plugin_directory), &info) && info.dli_fname)
    return dirname_of(info.dli_fname);
  return ".";
}

const BridgeAPI *loaded_bridge()
{
  return api_ready ? &api : nullptr;
}

const BridgeAPI *load_bridge(int nthreads, std::string &error)
{
  if (api_ready) return &api;
  const bool python_host = dlsym(RTLD_DEFAULT, "Py_IsInitialized") != nullptr;
  if (!ensure_libpython(error)) return nullptr;
  if (!python_host) {
    // numpy's BLAS would otherwise start one thread per core in every MPI rank
    const std::string n = std::to_string(nthreads > 0 ? nthreads : 1);
    for (const char *var : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"})
      setenv(var, n.c_str(), 0);
  }

  const std::string dir = plugin_directory();
  std::string path = getenv_str("DEEPCOMP_BRIDGE");
  if (path.empty()) path = dir + "/libdeepcomp_bridge.so";
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    error = "deepcomp: cannot load the Python bridge " + path + ": " + (why ? why : "unknown error");
    return nullptr;
  }
  auto sym = [&](const char *name) -> void * {
    void *p = dlsym(handle, name);
    if (!p) error = std::string("deepcomp: the bridge ") + path + " lacks " + name + " (mixed installation?)";
    return p;
  };
  BridgeAPI a;
  a.abi_version = reinterpret_cast<dcb_abi_version_fn>(sym("dcb_abi_version"));
  a.initialize = reinterpret_cast<dcb_initialize_fn>(sym("dcb_initialize"));
  a.create = reinterpret_cast<dcb_create_fn>(sym("dcb_create"));
  a.compute = reinterpret_cast<dcb_compute_fn>(sym("dcb_compute"));
  a.destroy = reinterpret_cast<dcb_destroy_fn>(sym("dcb_destroy"));
  a.needs_pairs = reinterpret_cast<dcb_needs_pairs_fn>(sym("dcb_needs_pairs"));
  a.param_dims = reinterpret_cast<dcb_param_dims_fn>(sym("dcb_param_dims"));
  if (!a.abi_version || !a.initialize || !a.create || !a.compute || !a.destroy || !a.needs_pairs || !a.param_dims)
    return nullptr;
  a.finish = reinterpret_cast<dcb_finish_fn>(dlsym(handle, "dcb_finish"));    // optional
  if (a.abi_version() != DCB_ABI_VERSION) {
    error = "deepcomp: the bridge " + path + " has interface version " + std::to_string(a.abi_version()) +
        ", the plugin expects " + std::to_string(DCB_ABI_VERSION) + "; reinstall deepcomp-ase";
    return nullptr;
  }

  // site-packages holding deepcomp_ase: <site>/deepcomp_ase/lammps/<this plugin>
  const std::string site_dir = dirname_of(dirname_of(dir));
  std::string python = getenv_str("DEEPCOMP_PYTHON");
  if (python.empty()) python = venv_python(site_dir);

  char err[4096] = {0};
  if (a.initialize(python.empty() ? nullptr : python.c_str(), site_dir.c_str(), err, sizeof err) != DCB_OK) {
    error = err;
    return nullptr;
  }
  api = a;
  api_ready = true;
  return &api;
}

}    // namespace deepcomp
