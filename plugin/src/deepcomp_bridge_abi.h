/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The C interface between the deepcomp LAMMPS pair style (deepcompplugin.so, no Python
 * symbols) and the bridge library (libdeepcomp_bridge.so, Python C-API).
 *
 * The plugin dlopen()s the bridge and looks the functions below up by name. Every
 * function is safe to call with or without the GIL held by the calling thread.
 * Arrays are borrowed for the duration of one call only.
 */
#ifndef DEEPCOMP_BRIDGE_ABI_H
#define DEEPCOMP_BRIDGE_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* bump whenever a struct or a signature below changes */
#define DCB_ABI_VERSION 5

/* return codes of dcb_compute / dcb_create status */
#define DCB_OK 0
#define DCB_ERROR_LOCAL 1      /* this rank failed: the plugin calls error->one */
#define DCB_ERROR_COLLECTIVE 2 /* every rank fails together: the plugin calls error->all */

/* where the frame / atomic parameters come from (pair_style keywords) */
#define DCB_PARAM_NONE 0
#define DCB_PARAM_VALUES 1  /* fparam X ... / aparam X ... */
#define DCB_PARAM_COMPUTE 2 /* fparam_from_compute ID / aparam_from_compute ID */
#define DCB_PARAM_FIX 3     /* fparam_from_fix ID [index] */

/* log levels passed to the log callback */
#define DCB_LOG_INFO 0
#define DCB_LOG_WARNING 1

typedef void (*dcb_log_fn)(void *ctx, int level, const char *message);

typedef struct dcb_create_args {
  const char *model_file;
  int ntypes;                    /* number of LAMMPS atom types */
  const char *const *type_names; /* [ntypes]: element of LAMMPS type i+1, NULL for "NULL";
                                  * all "" for a bare 'pair_coeff * *' (types by position in the type_map) */
  int comm_f;                    /* MPI_Comm_c2f(world) */
  int rank, nprocs;              /* of that communicator */
  int has_check_frequency;       /* 0: use the value stored in the model file */
  int check_frequency;
  const char *overflow;  /* "warn" | "error" | "ignore" */
  const char *device;    /* "auto" | "cpu" | "cuda" */
  const char *precision; /* "double" | "single" */
  const char *lammps_version;
  double energy_scale; /* LAMMPS energy units per eV (force->boltz / boltz of units metal) */
  dcb_log_fn log;
  void *log_ctx;
  /* since version 3 (version 1 had none of the fields below): model deviation
   * (pair_style deepcomp M1 M2 ... out_freq N out_file F ...) and the GPU */
  int nmodels;                    /* >= 1; model_files[0] == model_file drives the dynamics */
  const char *const *model_files; /* [nmodels] */
  int out_freq;                   /* every this many steps (0: never) */
  const char *out_file;           /* written by rank 0 */
  int has_relative;
  double relative; /* LAMMPS force units */
  int has_relative_v;
  double relative_v; /* LAMMPS energy units */
  int atomic;        /* per-atom force deviations, by atom id */
  int append;        /* 1: continue out_file (restart), 0: start it with the header */
  int gpu_id; /* >= 0: every rank uses this GPU; -1: local rank mod GPUs visible */
  /* since version 4 */
  double length_scale; /* LAMMPS length units per Angstrom (force->angstrom: 1 for metal/real, 1e-10 for si) */
  /* since version 5: frame / atomic parameters (checked against the models when they load) */
  int fparam_source; /* DCB_PARAM_* */
  int nfparam;       /* values given with the fparam keyword */
  int aparam_source; /* DCB_PARAM_* */
  int naparam;       /* values given with the aparam keyword */
} dcb_create_args;

/* x, type, nlocal, nghost are always given; the pair list only when dcb_needs_pairs(model)
 * returned 1 (otherwise npairs = 0 and pair_i = pair_j = NULL: the model builds its own list) */
typedef struct dcb_compute_args {
  int nlocal, nghost;
  int npairs;
  const double *x;   /* [nall][3] */
  double *f;         /* [nall][3], forces are added */
  const int *type;   /* [nall] LAMMPS types (1-based) */
  const int *pair_i; /* [npairs] local index of the centre */
  const int *pair_j; /* [npairs] local or ghost index of the neighbour */
  double *eatom;     /* [nall] or NULL, per-atom energies are added */
  double *vatom;     /* [nall][6] or NULL, per-atom virials are added (xx yy zz xy xz yz) */
  int need_virial;   /* 1: fill virial[] */
  int64_t ntimestep;
  /* outputs */
  double energy;    /* sum over local atoms */
  double virial[6]; /* xx yy zz xy xz yz, this rank's share */
  int have_virial;
  /* since version 3: model deviation */
  const int *tag; /* [nall] atom ids (tagint, int under LAMMPS_SMALLBIG) */
  int64_t natoms; /* atoms in the whole system */
  /* since version 4: compute centroid/stress/atom */
  double *cvatom; /* [nall][9] or NULL, per-atom centroid virials are added (xx yy zz xy xz yz yx zx zy) */
  /* since version 5: frame / atomic parameters of this step (dims from dcb_param_dims) */
  const double *fparam; /* [dim_fparam] or NULL */
  const double *aparam; /* [nlocal][dim_aparam] or NULL */
  int dim_fparam, dim_aparam;
  double *dedfparam; /* [dim_fparam] or NULL: receives this rank's share of dE/dfparam */
  int probe;         /* 1: evaluate the first model for dedfparam only (f is scratch; no step counted) */
} dcb_compute_args;

/* int dcb_abi_version(void) */
typedef int (*dcb_abi_version_fn)(void);
/* start the interpreter when the process has none; python_exe / site_dir may be NULL */
typedef int (*dcb_initialize_fn)(const char *python_exe, const char *site_dir, char *err, int errlen);
/* returns a model handle, or NULL with err filled; *cutoff receives the model cutoff */
typedef void *(*dcb_create_fn)(const dcb_create_args *args, double *cutoff, char *err, int errlen);
typedef int (*dcb_compute_fn)(void *model, dcb_compute_args *args, char *err, int errlen);
typedef void (*dcb_destroy_fn)(void *model);
/* end of a run (Pair::finish, every rank): print the overflow summary; returns DCB_* like compute.
 * Optional: the plugin checks for the symbol. */
typedef int (*dcb_finish_fn)(void *model, char *err, int errlen);
/* numb_fparam and numb_aparam of the loaded models (since version 5) */
typedef int (*dcb_param_dims_fn)(void *model, int *dim_fparam, int *dim_aparam);
/* 1: compute needs LAMMPS's full neighbour list as pairs; 0: x and type suffice (device path) */
typedef int (*dcb_needs_pairs_fn)(void *model);

#ifdef __cplusplus
}
#endif

#endif
