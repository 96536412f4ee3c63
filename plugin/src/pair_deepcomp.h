/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * pair_style deepcomp: a Deep Potential (deepcomp compressed or DeePMD-kit model file)
 * evaluated in Python by deepcomp_ase, called once per step with the full neighbour list
 * flattened to a pair list, or (GPU: the bridge's dcb_needs_pairs says 0) with positions and
 * types only, no list being built. Forces on ghost atoms are written by Python and summed onto
 * their owners by LAMMPS's reverse communication (newton pair on).
 */
#ifndef DEEPCOMP_PAIR_DEEPCOMP_H
#define DEEPCOMP_PAIR_DEEPCOMP_H

#include "pair.h"

#include <string>
#include <vector>

namespace deepcomp {

class PairDeepComp : public LAMMPS_NS::Pair {
 public:
  explicit PairDeepComp(LAMMPS_NS::LAMMPS *lmp);
  ~PairDeepComp() override;

  void compute(int eflag, int vflag) override;
  void settings(int narg, char **arg) override;
  void coeff(int narg, char **arg) override;
  void init_style() override;
  double init_one(int i, int j) override;

  void write_restart(FILE *fp) override;
  void read_restart(FILE *fp) override;
  void write_restart_settings(FILE *fp) override;
  void read_restart_settings(FILE *fp) override;

  double memory_usage() override;
  void finish() override;    // end of run: overflow summary

  // called by the bridge to print through LAMMPS
  void log_message(int level, const char *message);

  // for compute deepcomp/fparam/dedn: numb_fparam of the model, and this rank's share of
  // dE/dfparam at `value` with the positions and pairs of this step's force call
  int get_dim_fparam() const { return dim_fparam; }
  double dedfparam_local(const std::vector<double> &value);

 private:
  // pair_style arguments
  std::string model_file;   // as given (the first model: it drives the dynamics)
  std::string model_path;   // absolute, written to restart files
  std::vector<std::string> model_files, model_paths;   // all models, for the model deviation
  // model deviation (as pair_style deepmd): every out_freq steps, written by rank 0
  int out_freq;
  std::string out_file;
  int has_relative, has_relative_v, atomic;
  double relative, relative_v;
  int append_out;   // continue out_file (after read_restart)
  int has_check_frequency;
  int check_frequency;
  std::string overflow;
  std::string device;
  std::string precision;
  int gpu_id;   // -1: local rank mod GPUs
  // pair_coeff: element of each LAMMPS type (index 1..ntypes), "NULL" for none, "" for every
  // type after a bare 'pair_coeff * *' (types by position in the model's type_map)
  std::vector<std::string> type_names;

  void *model;   // bridge handle
  double cutoff;
  int needs_pairs;   // 0: the bridge builds its own neighbour list (device path): LAMMPS builds none
  double energy_scale;   // LAMMPS energy units per eV (units metal: 1, units real: kcal/mol per eV)
  double length_scale;   // LAMMPS length units per Angstrom (units si: 1e-10 m)
  std::vector<int> pair_i, pair_j;

  // frame / atomic parameters, as pair_style deepmd takes them (DCB_PARAM_* sources)
  int fparam_source, aparam_source;
  std::vector<double> fparam_values, aparam_values;   // given with the fparam / aparam keywords
  std::string compute_fparam_id, compute_aparam_id, fix_fparam_id;
  int fix_fparam_index;   // -1: the fix's scalar
  int dim_fparam, dim_aparam;   // of the loaded models
  std::vector<double> fparam_step, aparam_step;   // this step's values
  std::vector<double> dedn_step;   // this rank's share of dE/dfparam at fparam_step
  int64_t dedn_timestep;   // step of the last force call (-1: none)
  void make_fparam(std::vector<double> &out);
  void make_aparam(std::vector<double> &out);

  void allocate();
  void create_model();
  void destroy_model();
  void check_units();
};

}    // namespace deepcomp

#endif
