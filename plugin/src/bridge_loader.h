/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Finding a Python interpreter and loading libdeepcomp_bridge.so, once per process.
 */
#ifndef DEEPCOMP_BRIDGE_LOADER_H
#define DEEPCOMP_BRIDGE_LOADER_H

#include "deepcomp_bridge_abi.h"

#include <string>

namespace deepcomp {

struct BridgeAPI {
  dcb_abi_version_fn abi_version;
  dcb_initialize_fn initialize;
  dcb_create_fn create;
  dcb_compute_fn compute;
  dcb_destroy_fn destroy;
  dcb_finish_fn finish;    // may be null: a bridge without the end-of-run summary
  dcb_needs_pairs_fn needs_pairs;
  dcb_param_dims_fn param_dims;
};

// The loaded bridge with a running interpreter, or nullptr with `error` set.
// When this starts the interpreter (plain lmp binary), the BLAS/OpenMP thread counts of
// numpy are set to `nthreads` unless the environment sets them.
// Thread-unsafe; LAMMPS calls it from its main thread only.
const BridgeAPI *load_bridge(int nthreads, std::string &error);

// Bridge already loaded (for destructors: never load anything there).
const BridgeAPI *loaded_bridge();

// Directory holding this plugin file.
std::string plugin_directory();

}    // namespace deepcomp

#endif
