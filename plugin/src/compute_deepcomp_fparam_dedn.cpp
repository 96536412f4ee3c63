// SPDX-License-Identifier: GPL-2.0-or-later
//
// compute ID group deepcomp/fparam/dedn SOURCE [delta]: see the header.

#include "compute_deepcomp_fparam_dedn.h"

#include "pair_deepcomp.h"

#include "error.h"
#include "fix.h"
#include "force.h"
#include "input.h"
#include "modify.h"
#include "update.h"
#include "utils.h"
#include "variable.h"

#include <mpi.h>
#include <vector>

using namespace LAMMPS_NS;

namespace deepcomp {

ComputeDeepCompFparamDedn::ComputeDeepCompFparamDedn(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), source_kind(SRC_VARIABLE), source_index(-1), pair(nullptr)
{
  static const char *usage = "compute ID group deepcomp/fparam/dedn v_name|c_ID|c_ID[i]|f_ID|f_ID[i] [delta]";
  if (narg < 4 || narg > 5) error->all(FLERR, "Illegal compute deepcomp/fparam/dedn command: expected {}", usage);
  std::string token = arg[3];
  const auto lb = token.find('['), rb = token.find(']');
  if (lb != std::string::npos || rb != std::string::npos) {
    if (lb == std::string::npos || rb != token.size() - 1 || rb <= lb + 1)
      error->all(FLERR, "Illegal source specification '{}' in compute deepcomp/fparam/dedn: expected {}", arg[3],
                 usage);
    source_index = utils::inumeric(FLERR, token.substr(lb + 1, rb - lb - 1), false, lmp) - 1;
    if (source_index < 0)
      error->all(FLERR, "compute deepcomp/fparam/dedn: the index in '{}' must be 1 or more", arg[3]);
    token = token.substr(0, lb);
  }
  if (utils::strmatch(token, "^v_")) {
    source_kind = SRC_VARIABLE;
    if (source_index >= 0) error->all(FLERR, "Variable source for compute deepcomp/fparam/dedn must be scalar");
  } else if (utils::strmatch(token, "^c_")) {
    source_kind = SRC_COMPUTE;
  } else if (utils::strmatch(token, "^f_")) {
    source_kind = SRC_FIX;
  } else {
    error->all(FLERR, "compute deepcomp/fparam/dedn: source '{}' must be a variable, compute, or fix reference "
                      "(v_name, c_ID, c_ID[i], f_ID, f_ID[i])", arg[3]);
  }
  source_id = token.substr(2);
  if (narg == 5 && !(utils::numeric(FLERR, arg[4], false, lmp) > 0.0))
    error->all(FLERR, "delta must be > 0 in compute deepcomp/fparam/dedn");
  scalar_flag = 1;
  extscalar = 1;
  timeflag = 1;
}

void ComputeDeepCompFparamDedn::init()
{
  if (!force->pair) error->all(FLERR, "compute deepcomp/fparam/dedn requires an active pair style");
  pair = dynamic_cast<PairDeepComp *>(force->pair_match("^deepcomp$", 0, 0));
  if (!pair) error->all(FLERR, "compute deepcomp/fparam/dedn requires pair_style deepcomp");
  if (pair->get_dim_fparam() != 1)
    error->all(FLERR, "compute deepcomp/fparam/dedn supports a single frame-parameter dimension only (the model "
                      "has numb_fparam = {})", pair->get_dim_fparam());
}

double ComputeDeepCompFparamDedn::source_value()
{
  if (source_kind == SRC_VARIABLE) {
    const int ivar = input->variable->find(source_id.c_str());
    if (ivar < 0) error->all(FLERR, "Variable source not found: {}", source_id);
    return input->variable->compute_equal(ivar);
  }
  if (source_kind == SRC_COMPUTE) {
    Compute *c = modify->get_compute_by_id(source_id);
    if (!c) error->all(FLERR, "Compute source not found: {}", source_id);
    if (source_index < 0) {
      if (!c->scalar_flag) error->all(FLERR, "Compute source is not scalar: {}", source_id);
      if (!(c->invoked_flag & Compute::INVOKED_SCALAR)) {
        c->compute_scalar();
        c->invoked_flag |= Compute::INVOKED_SCALAR;
      }
      return c->scalar;
    }
    if (!c->vector_flag) error->all(FLERR, "Compute source is not vector-valued: {}", source_id);
    if (!(c->invoked_flag & Compute::INVOKED_VECTOR)) {
      c->compute_vector();
      c->invoked_flag |= Compute::INVOKED_VECTOR;
    }
    if (source_index >= c->size_vector) error->all(FLERR, "Compute source index is out of range: {}", source_id);
    return c->vector[source_index];
  }
  Fix *fix = modify->get_fix_by_id(source_id);
  if (!fix) error->all(FLERR, "Fix source not found: {}", source_id);
  if (source_index < 0) {
    if (!fix->scalar_flag) error->all(FLERR, "Fix source is not scalar: {}", source_id);
    return fix->compute_scalar();
  }
  if (!fix->vector_flag) error->all(FLERR, "Fix source is not vector-valued: {}", source_id);
  if (source_index >= fix->size_vector) error->all(FLERR, "Fix source index is out of range: {}", source_id);
  return fix->compute_vector(source_index);
}

double ComputeDeepCompFparamDedn::compute_scalar()
{
  invoked_scalar = update->ntimestep;
  const std::vector<double> value(1, source_value());
  double one = pair->dedfparam_local(value);
  MPI_Allreduce(&one, &scalar, 1, MPI_DOUBLE, MPI_SUM, world);
  return scalar;
}

}    // namespace deepcomp
