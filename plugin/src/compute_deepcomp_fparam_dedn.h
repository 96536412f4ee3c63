/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * compute ID group deepcomp/fparam/dedn SOURCE [delta]
 *
 * dE/dfparam (a global, extensive scalar) of pair_style deepcomp for a model with one frame
 * parameter, at the value SOURCE holds now (v_name, c_ID, c_ID[i], f_ID or f_ID[i]), as
 * compute deepmd/fparam/dedn gives it for pair_style deepmd. deepcomp differentiates the fitting
 * net exactly, so `delta` (the finite-difference step of deepmd's compute) is accepted and unused.
 */
#ifndef DEEPCOMP_COMPUTE_DEEPCOMP_FPARAM_DEDN_H
#define DEEPCOMP_COMPUTE_DEEPCOMP_FPARAM_DEDN_H

#include "compute.h"

#include <string>

namespace deepcomp {

class PairDeepComp;

class ComputeDeepCompFparamDedn : public LAMMPS_NS::Compute {
 public:
  ComputeDeepCompFparamDedn(LAMMPS_NS::LAMMPS *lmp, int narg, char **arg);
  void init() override;
  double compute_scalar() override;

 private:
  enum { SRC_VARIABLE, SRC_COMPUTE, SRC_FIX } source_kind;
  std::string source_id;
  int source_index;   // 0-based element of a vector source, -1: scalar
  PairDeepComp *pair;

  double source_value();
};

}    // namespace deepcomp

#endif
