// SPDX-License-Identifier: GPL-2.0-or-later
//
// pair_style deepcomp MODEL [MODEL2 ...] [check_frequency N] [overflow warn|error|ignore]
//                           [device auto|cpu|cuda] [precision double|single] [gpu_id N]
//                           [out_freq N] [out_file FILE] [relative X] [relative_v Y] [atomic]
//                           [fparam X ...] [aparam X ...] [fparam_from_compute ID]
//                           [fparam_from_fix ID [index]] [aparam_from_compute ID]
// With several models the first drives the dynamics; every out_freq steps all of them are
// evaluated and their deviation written to out_file, as pair_style deepmd does.
// pair_coeff * * Elem1 Elem2 ...      (one element name or NULL per LAMMPS atom type; types past the
//                                      names are NULL, as pair_style deepmd takes them)
// pair_coeff * *                      (LAMMPS type k is element k of the model's type_map)
// As pair_style deepmd, the style claims every pair of types (so NULL types can be given to
// other styles under hybrid/overlay), takes any unit style but lj (converted through LAMMPS's
// Boltzmann constant and Angstrom) and fills compute centroid/stress/atom's 9 components.

#include "pair_deepcomp.h"

#include "bridge_loader.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "fix.h"
#include "force.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mpi.h>
#include <unistd.h>

using namespace LAMMPS_NS;

namespace deepcomp {

namespace {

void log_trampoline(void *ctx, int level, const char *message)
{
  static_cast<PairDeepComp *>(ctx)->log_message(level, message);
}

void write_string(FILE *fp, const std::string &s)
{
  int n = static_cast<int>(s.size());
  fwrite(&n, sizeof(int), 1, fp);
  if (n) fwrite(s.data(), sizeof(char), n, fp);
}

// read on rank 0, broadcast to all
std::string read_string(LAMMPS *lmp, FILE *fp, MPI_Comm world, int me)
{
  int n = 0;
  if (me == 0) utils::sfread(FLERR, &n, sizeof(int), 1, fp, nullptr, lmp->error);
  MPI_Bcast(&n, 1, MPI_INT, 0, world);
  if (n < 0 || n > (1 << 20)) lmp->error->all(FLERR, "deepcomp: corrupt pair style data in restart file");
  std::string s(static_cast<size_t>(n), '\0');
  if (me == 0 && n) utils::sfread(FLERR, &s[0], sizeof(char), n, fp, nullptr, lmp->error);
  if (n) MPI_Bcast(&s[0], n, MPI_CHAR, 0, world);
  return s;
}

int read_int(LAMMPS *lmp, FILE *fp, MPI_Comm world, int me)
{
  int v = 0;
  if (me == 0) utils::sfread(FLERR, &v, sizeof(int), 1, fp, nullptr, lmp->error);
  MPI_Bcast(&v, 1, MPI_INT, 0, world);
  return v;
}

std::string absolute_path(const std::string &path)
{
  char *resolved = realpath(path.c_str(), nullptr);
  if (!resolved) return path;
  std::string out(resolved);
  free(resolved);
  return out;
}

}    // namespace

PairDeepComp::PairDeepComp(LAMMPS *lmp) :
    Pair(lmp), out_freq(100), out_file("model_devi.out"), has_relative(0), has_relative_v(0), atomic(0),
    relative(0.0), relative_v(0.0), append_out(0), has_check_frequency(0), check_frequency(-1), overflow("warn"),
    device("auto"), precision("double"), gpu_id(-1), model(nullptr), cutoff(0.0), needs_pairs(1),
    energy_scale(1.0), length_scale(1.0), fparam_source(DCB_PARAM_NONE), aparam_source(DCB_PARAM_NONE),
    fix_fparam_index(-1), dim_fparam(0), dim_aparam(0), dedn_timestep(-1)
{
  single_enable = 0;
  restartinfo = 1;
  one_coeff = 1;
  manybody_flag = 1;
  centroidstressflag = CENTROID_AVAIL;   // the model's per-atom virial has 9 components
  unit_convert_flag = 0;
}

PairDeepComp::~PairDeepComp()
{
  destroy_model();
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairDeepComp::destroy_model()
{
  if (model) {
    const BridgeAPI *api = loaded_bridge();
    if (api) api->destroy(model);
    model = nullptr;
  }
}

void PairDeepComp::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      setflag[i][j] = 0;
      cutsq[i][j] = 0.0;
    }
}

void PairDeepComp::check_units()
{
  // models work in eV and Angstrom. As pair_style deepmd, every unit style but lj is converted
  // through that style's own Boltzmann constant (energy) and Angstrom (length), so that
  // temperatures and pressures mean the same in every style
  static const double boltz_metal = 8.617343e-5;   // LAMMPS's force->boltz under units metal (eV/K)
  if (strcmp(update->unit_style, "lj") == 0)
    error->all(FLERR,
               "pair_style deepcomp cannot use 'units lj': the model works in eV and Angstrom, which have no "
               "lj equivalent; use units metal (or real, si, cgs, electron, micro, nano)");
  energy_scale = force->boltz / boltz_metal;
  length_scale = force->angstrom;
  if (!(energy_scale > 0.0) || !(length_scale > 0.0))
    error->all(FLERR, "pair_style deepcomp: units {} defines no Boltzmann constant or Angstrom to convert with",
               update->unit_style);
}

/* ---------------------------------------------------------------------- */

void PairDeepComp::settings(int narg, char **arg)
{
  static const char *usage =
      "expected pair_style deepcomp MODEL [MODEL2 ...] [check_frequency N] [overflow warn|error|ignore] "
      "[device auto|cpu|cuda] [precision double|single] [gpu_id N] [out_freq N] [out_file FILE] [relative X] "
      "[relative_v Y] [atomic] [fparam X ...] [aparam X ...] [fparam_from_compute ID] [fparam_from_fix ID [index]] "
      "[aparam_from_compute ID]";
  auto is_key = [](const std::string &k) {
    for (const char *key : {"check_frequency", "overflow", "device", "precision", "gpu_id", "out_freq", "out_file",
                            "relative", "relative_v", "atomic", "fparam", "aparam", "fparam_from_compute",
                            "fparam_from_fix", "aparam_from_compute"})
      if (k == key) return true;
    return false;
  };
  if (narg < 1 || is_key(arg[0])) error->all(FLERR, "Illegal pair_style deepcomp command: {}", usage);
  check_units();
  model_files.clear();
  model_paths.clear();
  int iarg = 0;
  while (iarg < narg && !is_key(arg[iarg])) {
    model_files.emplace_back(arg[iarg]);
    model_paths.push_back(absolute_path(arg[iarg]));
    ++iarg;
  }
  // a misspelt keyword would otherwise be taken for a further model file
  for (size_t k = 1; k < model_files.size(); ++k)
    if (access(model_files[k].c_str(), R_OK) != 0)
      error->all(FLERR,
                 "Illegal pair_style deepcomp keyword '{}': neither a keyword (check_frequency, overflow, device, "
                 "precision, gpu_id, out_freq, out_file, relative, relative_v, atomic, fparam, aparam, "
                 "fparam_from_compute, fparam_from_fix, aparam_from_compute) nor a readable model file",
                 model_files[k]);
  model_file = model_files[0];
  model_path = model_paths[0];
  has_check_frequency = 0;
  check_frequency = -1;
  overflow = "warn";
  device = "auto";
  precision = "double";
  out_freq = 100;
  out_file = "model_devi.out";
  has_relative = has_relative_v = atomic = 0;
  relative = relative_v = 0.0;
  append_out = 0;
  bool has_out_file = false;
  gpu_id = -1;
  fparam_source = aparam_source = DCB_PARAM_NONE;
  fparam_values.clear();
  aparam_values.clear();
  compute_fparam_id.clear();
  compute_aparam_id.clear();
  fix_fparam_id.clear();
  fix_fparam_index = -1;
  bool has_fparam_compute = false, has_fparam_fix = false, has_aparam_compute = false;

  auto choice = [&](const char *key, const char *value, std::initializer_list<const char *> allowed) {
    for (const char *a : allowed)
      if (strcmp(value, a) == 0) return std::string(value);
    std::string list;
    for (const char *a : allowed) list += std::string(list.empty() ? "" : "|") + a;
    error->all(FLERR, "Illegal pair_style deepcomp value '{}' for keyword {}: expected {}", value, key, list);
  };

  while (iarg < narg) {
    const std::string key = arg[iarg];
    if (key == "atomic") {
      atomic = 1;
      iarg += 1;
      continue;
    }
    if (key == "fparam" || key == "aparam") {
      // the values up to the next keyword; their number is checked against the model's numb_fparam /
      // numb_aparam once it is loaded (pair_coeff)
      std::vector<double> &values = key == "fparam" ? fparam_values : aparam_values;
      values.clear();
      int k = iarg + 1;
      for (; k < narg && !is_key(arg[k]); ++k) values.push_back(utils::numeric(FLERR, arg[k], false, lmp));
      if (values.empty())
        error->all(FLERR, "Illegal {}, the dimension should be the model's numb_{} (no value given)", key, key);
      (key == "fparam" ? fparam_source : aparam_source) = DCB_PARAM_VALUES;
      iarg = k;
      continue;
    }
    if (key == "fparam_from_fix") {
      if (iarg + 1 >= narg || is_key(arg[iarg + 1]))
        error->all(FLERR, "invalid fparam_from_fix key: should be fparam_from_fix fix_fparam_id(str) "
                          "[fix_vector_index]");
      fix_fparam_id = arg[iarg + 1];
      fix_fparam_index = -1;
      has_fparam_fix = true;
      fparam_source = DCB_PARAM_FIX;
      iarg += 2;
      if (iarg < narg && !is_key(arg[iarg])) {
        char *end = nullptr;
        errno = 0;
        const long one_based = strtol(arg[iarg], &end, 10);
        if (end == arg[iarg] || *end != '\0' || errno == ERANGE || one_based < 1 || one_based > INT_MAX)
          error->all(FLERR, "invalid fparam_from_fix key: vector index must be a positive 1-based integer");
        fix_fparam_index = static_cast<int>(one_based - 1);
        ++iarg;
      }
      continue;
    }
    if (key == "fparam_from_compute" || key == "aparam_from_compute") {
      if (iarg + 1 >= narg || is_key(arg[iarg + 1]))
        error->all(FLERR, "invalid {} key: should be {} compute_{}_id(str)", key, key, key.substr(0, 6));
      if (key == "fparam_from_compute") {
        compute_fparam_id = arg[iarg + 1];
        has_fparam_compute = true;
        fparam_source = DCB_PARAM_COMPUTE;
      } else {
        compute_aparam_id = arg[iarg + 1];
        has_aparam_compute = true;
        aparam_source = DCB_PARAM_COMPUTE;
      }
      iarg += 2;
      continue;
    }
    if (!is_key(key))
      error->all(FLERR,
                 "Illegal pair_style deepcomp keyword '{}': expected check_frequency, overflow, device, precision, "
                 "gpu_id, out_freq, out_file, relative, relative_v or atomic (model files come first)",
                 key);
    if (iarg + 1 >= narg) error->all(FLERR, "Illegal pair_style deepcomp command: keyword {} needs a value", key);
    const char *value = arg[iarg + 1];
    if (key == "check_frequency") {
      check_frequency = utils::inumeric(FLERR, value, false, lmp);
      has_check_frequency = 1;
    } else if (key == "overflow") {
      overflow = choice("overflow", value, {"warn", "error", "ignore"});
    } else if (key == "device") {
      device = choice("device", value, {"auto", "cpu", "cuda"});
    } else if (key == "precision") {
      precision = choice("precision", value, {"double", "single"});
    } else if (key == "out_freq") {
      out_freq = utils::inumeric(FLERR, value, false, lmp);
      if (out_freq < 0) error->all(FLERR, "Illegal pair_style deepcomp out_freq {}: must be >= 0", out_freq);
    } else if (key == "out_file") {
      out_file = value;
      has_out_file = true;
    } else if (key == "relative") {
      relative = utils::numeric(FLERR, value, false, lmp);
      has_relative = 1;
    } else if (key == "relative_v") {
      relative_v = utils::numeric(FLERR, value, false, lmp);
      has_relative_v = 1;
    } else if (key == "gpu_id") {
      gpu_id = utils::inumeric(FLERR, value, false, lmp);
      if (gpu_id < 0) error->all(FLERR, "Illegal pair_style deepcomp gpu_id {}: expected a GPU index >= 0", gpu_id);
    }
    iarg += 2;
  }
  // the checks of pair_style deepmd
  if (has_aparam_compute && !aparam_values.empty())
    error->all(FLERR, "aparam, aparam_from_compute, and ttm should NOT be set simultaneously");
  if (has_fparam_compute && !fparam_values.empty())
    error->all(FLERR, "fparam and fparam_from_compute should NOT be set simultaneously");
  if (has_fparam_fix && !fparam_values.empty())
    error->all(FLERR, "fparam and fparam_from_fix should NOT be set simultaneously");
  if (has_fparam_fix && has_fparam_compute)
    error->all(FLERR, "fparam_from_compute and fparam_from_fix should NOT be set simultaneously");
  if (atomic && !has_out_file)
    error->all(FLERR, "pair_style deepcomp: keyword atomic needs out_file FILE (the per-atom force deviations "
                      "go to that file)");
  if (model_files.size() == 1 && (has_out_file || atomic || has_relative || has_relative_v) && comm->me == 0)
    error->warning(FLERR, "pair_style deepcomp: out_file/relative/relative_v/atomic have no effect with one "
                          "model; give two or more model files for a model deviation");

  // pair_style issued again with the types already mapped: reload with the new settings
  if (!type_names.empty()) create_model();
}

/* ---------------------------------------------------------------------- */

void PairDeepComp::coeff(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  // fewer names than types: the types past them are NULL, as pair_style deepmd takes it
  if (narg < 2 || narg > 2 + ntypes)
    error->all(FLERR,
               "Incorrect args for pair_coeff deepcomp: expected 'pair_coeff * * E1 ... E{}' with one element "
               "name (or NULL) per atom type, or 'pair_coeff * *' (type k = element k of the model's type_map), "
               "got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect args for pair_coeff deepcomp: the first two arguments must be '* *'");

  if (!allocated) allocate();
  type_names.assign(ntypes + 1, "NULL");
  std::string null_types;
  std::string unnamed;
  for (int t = 1; t <= ntypes; ++t) {
    if (narg == 2)
      type_names[t] = std::string();
    else if (1 + t < narg)
      type_names[t] = std::string(arg[1 + t]);
    else
      unnamed += (unnamed.empty() ? "" : " ") + std::to_string(t);
    if (type_names[t] == "NULL") null_types += (null_types.empty() ? "" : " ") + std::to_string(t);
  }
  if (!unnamed.empty() && comm->me == 0)
    error->warning(FLERR, "pair_coeff deepcomp: {} element names for {} atom types: type(s) {} get no element and "
                          "are NULL, as pair_style deepmd takes it; give one name (or NULL) per type to be explicit",
                   narg - 2, ntypes, unnamed);
  if (narg > 2 && static_cast<int>(std::count(type_names.begin() + 1, type_names.end(), "NULL")) == ntypes)
    error->all(FLERR, "Incorrect args for pair_coeff deepcomp: every type is NULL");
  if (force->pair == this && !null_types.empty() && comm->me == 0)
    error->warning(FLERR, "pair_coeff deepcomp: atom type(s) {} are NULL: their atoms get no force from the model "
                          "and, without pair_style hybrid/overlay, from nothing else",
                   null_types);

  // every pair of types is claimed, those with a NULL type too (the model leaves their atoms out):
  // under hybrid/overlay another style may then cover the NULL types alone
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;

  create_model();
}

void PairDeepComp::create_model()
{
  if (model_file.empty() || model_paths.empty())
    error->all(FLERR, "pair_coeff deepcomp before pair_style deepcomp MODEL");
  std::string why;
  const BridgeAPI *api = load_bridge(comm->nthreads, why);
  if (!api) error->all(FLERR, why);
  destroy_model();

  const int ntypes = atom->ntypes;
  std::vector<const char *> names(ntypes, nullptr);
  for (int t = 1; t <= ntypes; ++t)
    if (type_names[t] != "NULL") names[t - 1] = type_names[t].c_str();

  dcb_create_args a;
  memset(&a, 0, sizeof a);
  a.model_file = model_path.c_str();
  a.ntypes = ntypes;
  a.type_names = names.data();
  a.comm_f = static_cast<int>(MPI_Comm_c2f(world));
  a.rank = comm->me;
  a.nprocs = comm->nprocs;
  a.has_check_frequency = has_check_frequency;
  a.check_frequency = check_frequency;
  a.overflow = overflow.c_str();
  a.device = device.c_str();
  a.precision = precision.c_str();
  a.lammps_version = lmp->version;
  a.energy_scale = energy_scale;
  a.length_scale = length_scale;
  a.log = &log_trampoline;
  a.log_ctx = this;
  std::vector<const char *> files;
  for (const auto &p : model_paths) files.push_back(p.c_str());
  a.nmodels = static_cast<int>(files.size());
  a.model_files = files.data();
  a.out_freq = out_freq;
  a.out_file = out_file.c_str();
  a.has_relative = has_relative;
  a.relative = relative;
  a.has_relative_v = has_relative_v;
  a.relative_v = relative_v;
  a.atomic = atomic;
  a.append = append_out;
  a.gpu_id = gpu_id;
  a.fparam_source = fparam_source;
  a.nfparam = static_cast<int>(fparam_values.size());
  a.aparam_source = aparam_source;
  a.naparam = static_cast<int>(aparam_values.size());

  char err[16384] = {0};
  double cut = 0.0;
  void *handle = api->create(&a, &cut, err, sizeof err);

  // the same failure everywhere (a wrong file name, an unknown element) ends cleanly with
  // error->all; a failure on some ranks only aborts from those ranks
  int ok = handle ? 1 : 0, all_ok = 0, any_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, world);
  MPI_Allreduce(&ok, &any_ok, 1, MPI_INT, MPI_MAX, world);
  if (!all_ok) {
    if (handle) api->destroy(handle);
    if (!any_ok) error->all(FLERR, "pair_style deepcomp: cannot load model {}: {}", model_file, err);
    if (!ok) error->one(FLERR, "pair_style deepcomp: cannot load model {}: {}", model_file, err);
    error->all(FLERR, "pair_style deepcomp: loading model {} failed on another MPI rank", model_file);
  }
  model = handle;
  cutoff = cut;
  needs_pairs = api->needs_pairs(model);
  if (api->param_dims(model, &dim_fparam, &dim_aparam) != DCB_OK)
    error->all(FLERR, "pair_style deepcomp: cannot read numb_fparam / numb_aparam of model {}", model_file);
  dedn_timestep = -1;
  if (!(cutoff > 0.0)) error->all(FLERR, "pair_style deepcomp: model {} has no positive cutoff", model_file);
}

/* ---------------------------------------------------------------------- */

void PairDeepComp::init_style()
{
  check_units();
  if (force->newton_pair == 0) error->all(FLERR, "pair_style deepcomp requires newton pair on");
  if (!model) error->all(FLERR, "pair_style deepcomp: no model loaded; give 'pair_coeff * * E1 E2 ...'");
  // LAMMPS's default skin is 2 A in metal/real but 1 mm in si: ghost atoms would fill that
  // skin (minutes, then a binning error), so say what to set instead
  if (neighbor->skin > 100.0 * cutoff)
    error->all(FLERR,
               "pair_style deepcomp: the neighbor skin {:g} is {:.3g} times the model cutoff {:g} (units {}); "
               "set a skin of about 2 Angstrom, e.g. 'neighbor {:g} bin'",
               neighbor->skin, neighbor->skin / cutoff, cutoff, update->unit_style, 2.0 * length_scale);
  // the device path builds its own list from x; ghosts still reach cutoff + skin, since
  // LAMMPS sizes them from the pair cutoff (init_one), not from list requests
  if (needs_pairs) neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairDeepComp::init_one(int, int)
{
  return cutoff;   // in LAMMPS length units
}

/* ---------------------------------------------------------------------- */

void PairDeepComp::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const BridgeAPI *api = loaded_bridge();
  if (!model || !api) error->all(FLERR, "pair_style deepcomp: compute without a model");

  double **x = atom->x;
  const int nlocal = atom->nlocal;
  const int nghost = atom->nghost;
  const int inum = needs_pairs ? list->inum : 0;
  const int *ilist = needs_pairs ? list->ilist : nullptr;
  const int *numneigh = needs_pairs ? list->numneigh : nullptr;
  int **firstneigh = needs_pairs ? list->firstneigh : nullptr;
  const double cut2 = cutoff * cutoff;

  // flatten the full list to (centre, neighbour) pairs within the model cutoff (none on the
  // device path)
  pair_i.clear();
  pair_j.clear();
  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      if (dx * dx + dy * dy + dz * dz < cut2) {
        pair_i.push_back(i);
        pair_j.push_back(j);
      }
    }
  }
  if (pair_i.size() > static_cast<size_t>(INT_MAX))
    error->one(FLERR, "pair_style deepcomp: too many pairs on one rank; use more MPI ranks");

  // this step's frame / atomic parameters, read as pair_style deepmd reads them
  make_aparam(aparam_step);
  make_fparam(fparam_step);
  dedn_step.assign(static_cast<size_t>(dim_fparam), 0.0);

  dcb_compute_args a;
  memset(&a, 0, sizeof a);
  a.nlocal = nlocal;
  a.nghost = nghost;
  a.npairs = static_cast<int>(pair_i.size());
  a.x = (nlocal + nghost) ? &x[0][0] : nullptr;
  a.f = (nlocal + nghost) ? &atom->f[0][0] : nullptr;
  a.type = atom->type;
  a.pair_i = needs_pairs ? pair_i.data() : nullptr;
  a.pair_j = needs_pairs ? pair_j.data() : nullptr;
  a.eatom = eflag_atom ? eatom : nullptr;
  a.vatom = (vflag_atom && (nlocal + nghost)) ? &vatom[0][0] : nullptr;
  a.need_virial = (vflag_global && !vflag_fdotr) ? 1 : 0;
  a.ntimestep = static_cast<int64_t>(update->ntimestep);
  static_assert(sizeof(tagint) == sizeof(int), "the bridge passes atom ids as int (LAMMPS_SMALLBIG)");
  a.tag = (nlocal + nghost && atom->tag_enable) ? reinterpret_cast<const int *>(atom->tag) : nullptr;
  a.natoms = static_cast<int64_t>(atom->natoms);
  a.cvatom = (cvflag_atom && (nlocal + nghost)) ? &cvatom[0][0] : nullptr;
  a.dim_fparam = dim_fparam;
  a.dim_aparam = dim_aparam;
  a.fparam = fparam_step.empty() ? nullptr : fparam_step.data();
  a.aparam = aparam_step.empty() ? nullptr : aparam_step.data();
  a.dedfparam = dim_fparam > 0 ? dedn_step.data() : nullptr;

  char err[16384] = {0};
  const int rc = api->compute(model, &a, err, sizeof err);
  if (rc == DCB_ERROR_COLLECTIVE) error->all(FLERR, "pair_style deepcomp: {}", err);
  if (rc != DCB_OK) error->one(FLERR, "pair_style deepcomp: {}", err);
  dedn_timestep = static_cast<int64_t>(update->ntimestep);

  if (eflag_global) eng_vdwl += a.energy;
  if (vflag_fdotr) {
    virial_fdotr_compute();
  } else if (vflag_global) {
    if (!a.have_virial) error->one(FLERR, "pair_style deepcomp: the Python side returned no virial");
    for (int k = 0; k < 6; ++k) virial[k] += a.virial[k];
  }
}

/* ---------------------------------------------------------------------- */

void PairDeepComp::make_fparam(std::vector<double> &out)
{
  out.clear();
  if (fparam_source == DCB_PARAM_VALUES) {
    out = fparam_values;
  } else if (fparam_source == DCB_PARAM_COMPUTE) {
    Compute *c = modify->get_compute_by_id(compute_fparam_id);
    if (!c) error->all(FLERR, "compute {} for fparam is not found", compute_fparam_id);
    out.resize(dim_fparam);
    if (dim_fparam == 1) {
      if (!c->scalar_flag) error->all(FLERR, "compute {} does not provide a scalar for fparam", compute_fparam_id);
      if (!(c->invoked_flag & Compute::INVOKED_SCALAR)) {
        c->compute_scalar();
        c->invoked_flag |= Compute::INVOKED_SCALAR;
      }
      out[0] = c->scalar;
    } else if (dim_fparam > 1) {
      if (!c->vector_flag) error->all(FLERR, "compute {} does not provide a vector for fparam", compute_fparam_id);
      if (!(c->invoked_flag & Compute::INVOKED_VECTOR)) {
        c->compute_vector();
        c->invoked_flag |= Compute::INVOKED_VECTOR;
      }
      if (c->size_vector < dim_fparam || !c->vector)
        error->all(FLERR, "compute {} vector is shorter than fparam dimension", compute_fparam_id);
      for (int k = 0; k < dim_fparam; ++k) out[k] = c->vector[k];
    }
  } else if (fparam_source == DCB_PARAM_FIX) {
    Fix *fix = modify->get_fix_by_id(fix_fparam_id);
    if (!fix) error->all(FLERR, "fix id is not found: {}", fix_fparam_id);
    out.resize(dim_fparam);
    if (fix_fparam_index < 0) {
      if (!fix->scalar_flag) error->all(FLERR, "fix {} does not provide a scalar for fparam", fix_fparam_id);
      const double value = fix->compute_scalar();
      for (int k = 0; k < dim_fparam; ++k) out[k] = value;
    } else {
      if (!fix->vector_flag) error->all(FLERR, "fix {} does not provide a vector for fparam", fix_fparam_id);
      if (fix_fparam_index > fix->size_vector - dim_fparam)
        error->all(FLERR, "fix {} vector is shorter than fparam dimension", fix_fparam_id);
      for (int k = 0; k < dim_fparam; ++k) out[k] = fix->compute_vector(fix_fparam_index + k);
    }
  }
}

void PairDeepComp::make_aparam(std::vector<double> &out)
{
  out.clear();
  const int nlocal = atom->nlocal;
  if (aparam_source == DCB_PARAM_VALUES) {
    // the same values for every atom
    const size_t dim = aparam_values.size();
    out.resize(dim * nlocal);
    for (int i = 0; i < nlocal; ++i)
      for (size_t k = 0; k < dim; ++k) out[i * dim + k] = aparam_values[k];
  } else if (aparam_source == DCB_PARAM_COMPUTE) {
    Compute *c = modify->get_compute_by_id(compute_aparam_id);
    if (!c) error->all(FLERR, "compute {} for aparam is not found", compute_aparam_id);
    if (!c->peratom_flag)
      error->all(FLERR, "compute {} does not provide per-atom data for aparam", compute_aparam_id);
    if (dim_aparam == 1 && c->size_peratom_cols != 0)
      error->all(FLERR, "compute {} does not provide a per-atom vector for aparam", compute_aparam_id);
    if (dim_aparam > 1 && c->size_peratom_cols < dim_aparam)
      error->all(FLERR, "compute {} array has fewer columns than aparam dimension", compute_aparam_id);
    out.resize(static_cast<size_t>(dim_aparam) * nlocal);
    if (!(c->invoked_flag & Compute::INVOKED_PERATOM)) {
      c->compute_peratom();
      c->invoked_flag |= Compute::INVOKED_PERATOM;
    }
    if (nlocal == 0) return;
    if (dim_aparam == 1) {
      if (!c->vector_atom) error->one(FLERR, "compute {} returned a null per-atom vector for aparam", compute_aparam_id);
      out.assign(c->vector_atom, c->vector_atom + nlocal);
    } else {
      if (!c->array_atom) error->one(FLERR, "compute {} returned a null per-atom array for aparam", compute_aparam_id);
      for (int i = 0; i < nlocal; ++i)
        for (int k = 0; k < dim_aparam; ++k) out[static_cast<size_t>(i) * dim_aparam + k] = c->array_atom[i][k];
    }
  }
}

double PairDeepComp::dedfparam_local(const std::vector<double> &value)
{
  if (dim_fparam < 1) error->all(FLERR, "compute deepcomp/fparam/dedn: the model takes no frame parameter");
  if (dedn_timestep != static_cast<int64_t>(update->ntimestep))
    error->all(FLERR, "compute deepcomp/fparam/dedn: pair_style deepcomp has not computed forces on step {} "
                      "(the compute is evaluated with the positions of the pair style's last force call)",
               update->ntimestep);
  if (value == fparam_step) return dedn_step[0];   // the derivative of this step's force call
  const BridgeAPI *api = loaded_bridge();
  const int nall = atom->nlocal + atom->nghost;
  std::vector<double> scratch(static_cast<size_t>(nall) * 3, 0.0), dedn(static_cast<size_t>(dim_fparam), 0.0);
  dcb_compute_args a;
  memset(&a, 0, sizeof a);
  a.nlocal = atom->nlocal;
  a.nghost = atom->nghost;
  a.npairs = static_cast<int>(pair_i.size());
  a.x = nall ? &atom->x[0][0] : nullptr;
  a.f = nall ? scratch.data() : nullptr;
  a.type = atom->type;
  a.pair_i = needs_pairs ? pair_i.data() : nullptr;
  a.pair_j = needs_pairs ? pair_j.data() : nullptr;
  a.ntimestep = static_cast<int64_t>(update->ntimestep);
  a.tag = (nall && atom->tag_enable) ? reinterpret_cast<const int *>(atom->tag) : nullptr;
  a.natoms = static_cast<int64_t>(atom->natoms);
  a.dim_fparam = dim_fparam;
  a.dim_aparam = dim_aparam;
  a.fparam = value.data();
  a.aparam = aparam_step.empty() ? nullptr : aparam_step.data();
  a.dedfparam = dedn.data();
  a.probe = 1;
  char err[16384] = {0};
  const int rc = api->compute(model, &a, err, sizeof err);
  if (rc == DCB_ERROR_COLLECTIVE) error->all(FLERR, "compute deepcomp/fparam/dedn: {}", err);
  if (rc != DCB_OK) error->one(FLERR, "compute deepcomp/fparam/dedn: {}", err);
  return dedn[0];
}

/* ---------------------------------------------------------------------- */

void PairDeepComp::write_restart_settings(FILE *fp)
{
  // the restart format holds one model: a restarted run uses the first (no model deviation)
  if (model_paths.size() > 1 && comm->me == 0)
    error->warning(FLERR, "pair_style deepcomp: the restart file keeps only the first model {}; give "
                          "pair_style again after read_restart for the model deviation", model_path);
  write_string(fp, model_path);
  fwrite(&has_check_frequency, sizeof(int), 1, fp);
  fwrite(&check_frequency, sizeof(int), 1, fp);
  write_string(fp, overflow);
  write_string(fp, device);
  write_string(fp, precision);
}

void PairDeepComp::read_restart_settings(FILE *fp)
{
  const int me = comm->me;
  model_file = read_string(lmp, fp, world, me);
  model_path = model_file;
  model_files.assign(1, model_file);
  model_paths.assign(1, model_path);
  has_check_frequency = read_int(lmp, fp, world, me);
  check_frequency = read_int(lmp, fp, world, me);
  overflow = read_string(lmp, fp, world, me);
  device = read_string(lmp, fp, world, me);
  precision = read_string(lmp, fp, world, me);
  check_units();
}

void PairDeepComp::write_restart(FILE *fp)
{
  write_restart_settings(fp);
  const int ntypes = atom->ntypes;
  fwrite(&ntypes, sizeof(int), 1, fp);
  for (int t = 1; t <= ntypes; ++t) write_string(fp, type_names.empty() ? std::string("NULL") : type_names[t]);
}

void PairDeepComp::read_restart(FILE *fp)
{
  read_restart_settings(fp);
  const int me = comm->me;
  const int ntypes = read_int(lmp, fp, world, me);
  if (ntypes != atom->ntypes)
    error->all(FLERR, "pair_style deepcomp: restart file maps {} atom types, the system has {}", ntypes,
               atom->ntypes);
  std::vector<std::string> names(ntypes + 1, "NULL");
  for (int t = 1; t <= ntypes; ++t) names[t] = read_string(lmp, fp, world, me);

  if (!allocated) allocate();
  type_names = names;
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;
  if (comm->me == 0) utils::logmesg(lmp, "  deepcomp: reloading model {} from restart\n", model_path);
  create_model();
}

/* ---------------------------------------------------------------------- */

double PairDeepComp::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += static_cast<double>(pair_i.capacity() + pair_j.capacity()) * sizeof(int);
  return bytes;
}

// Called by LAMMPS on every rank at the end of each run and minimization: one summary line
// when any input left the fine tables, whatever check_frequency is (collective in Python).
void PairDeepComp::finish()
{
  const BridgeAPI *api = loaded_bridge();
  if (!model || !api || !api->finish) return;
  char err[16384] = {0};
  const int rc = api->finish(model, err, sizeof err);
  if (rc == DCB_ERROR_COLLECTIVE) error->all(FLERR, "pair_style deepcomp: {}", err);
  if (rc != DCB_OK) error->one(FLERR, "pair_style deepcomp: {}", err);
}

void PairDeepComp::log_message(int level, const char *message)
{
  if (level == DCB_LOG_WARNING) {
    error->warning(FLERR, std::string(message));
  } else {
    utils::logmesg(lmp, std::string(message) + "\n");
  }
}

}    // namespace deepcomp
