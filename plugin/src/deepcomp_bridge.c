/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * libdeepcomp_bridge.so: the only part of the deepcomp LAMMPS plugin that uses the Python
 * C-API. Its Python symbols are left undefined and resolve against the libpython (or the
 * statically linked python executable) already present in the process; the plugin makes
 * sure there is one before it loads this library.
 *
 * Arrays owned by LAMMPS are handed to Python as memoryviews (no copy, no numpy C-API) and
 * released after each call, so Python cannot keep pointers into memory LAMMPS may
 * reallocate.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deepcomp_bridge_abi.h"

#define DCB_EXPORT __attribute__((visibility("default")))

#if PY_VERSION_HEX >= 0x030D0000
#define DCB_FINALIZING() Py_IsFinalizing()
#else
#define DCB_FINALIZING() _Py_IsFinalizing()
#endif

static const char *BRIDGE_MODULE = "deepcomp_ase.lammps.bridge";

typedef struct {
  dcb_log_fn fn; /* NULL once the owning pair style is gone */
  void *ctx;
} log_target;

typedef struct {
  PyObject *model; /* deepcomp_ase.lammps.bridge.LammpsModel */
  log_target *log; /* owned by a capsule that Python may outlive us with */
} dcb_model;

static void set_err(char *err, int errlen, const char *msg)
{
  if (!err || errlen <= 0) return;
  snprintf(err, (size_t) errlen, "%s", msg ? msg : "unknown error");
}

/* Turn the pending Python exception into a message and clear it (drops the traceback, and
 * with it any reference the failing frames held to LAMMPS arrays). Returns DCB_ERROR_* . */
static int fetch_error(char *err, int errlen)
{
  PyObject *type = NULL, *value = NULL, *tb = NULL;
  int code = DCB_ERROR_LOCAL;
  PyErr_Fetch(&type, &value, &tb);
  if (!type) {
    set_err(err, errlen, "deepcomp bridge: failure without a Python exception");
    return code;
  }
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb && value) PyException_SetTraceback(value, tb);

  PyObject *collective = value ? PyObject_GetAttrString(value, "deepcomp_collective") : NULL;
  if (!collective) PyErr_Clear();
  else {
    if (PyObject_IsTrue(collective) == 1) code = DCB_ERROR_COLLECTIVE;
    Py_DECREF(collective);
  }

  PyObject *text = NULL;
  PyObject *mod = PyImport_ImportModule(BRIDGE_MODULE);
  if (mod) {
    text = PyObject_CallMethod(mod, "format_error", "O", value ? value : Py_None);
    Py_DECREF(mod);
  }
  if (!text) {
    PyErr_Clear();
    text = value ? PyObject_Str(value) : NULL;
  }
  const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
  if (!utf8) PyErr_Clear();
  set_err(err, errlen, utf8 ? utf8 : "deepcomp bridge: unprintable Python exception");
  Py_XDECREF(text);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  return code;
}

/* ------------------------------------------------------------------ log callback */

static void log_capsule_free(PyObject *capsule)
{
  free(PyCapsule_GetPointer(capsule, "deepcomp.log_target"));
}

static PyObject *log_call(PyObject *self, PyObject *args)
{
  int level;
  const char *msg;
  if (!PyArg_ParseTuple(args, "is", &level, &msg)) return NULL;
  log_target *t = (log_target *) PyCapsule_GetPointer(self, "deepcomp.log_target");
  if (!t) return NULL;
  if (t->fn) t->fn(t->ctx, level, msg);
  Py_RETURN_NONE;
}

static PyMethodDef log_def = {"lammps_log", log_call, METH_VARARGS,
                              "lammps_log(level, message): print through LAMMPS (screen and log file)"};

/* ------------------------------------------------------------------ exported functions */

DCB_EXPORT int dcb_abi_version(void) { return DCB_ABI_VERSION; }

DCB_EXPORT int dcb_initialize(const char *python_exe, const char *site_dir, char *err, int errlen)
{
  /* the headers we were compiled with must match the running interpreter */
  const char *ver = Py_GetVersion();
  int major = 0, minor = 0;
  if (sscanf(ver, "%d.%d", &major, &minor) != 2 || major != PY_MAJOR_VERSION || minor != PY_MINOR_VERSION) {
    char buf[512];
    snprintf(buf, sizeof buf,
             "deepcomp bridge was built for Python %d.%d but the process runs Python %.40s; "
             "reinstall deepcomp-ase with the Python that runs LAMMPS",
             PY_MAJOR_VERSION, PY_MINOR_VERSION, ver);
    set_err(err, errlen, buf);
    return DCB_ERROR_LOCAL;
  }

  if (!Py_IsInitialized()) {
    PyStatus status;
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* Ctrl-C and MPI signals stay with LAMMPS */
    config.parse_argv = 0;
    char *argv[] = {(char *) "lmp"};
    status = PyConfig_SetBytesArgv(&config, 1, argv);
    if (!PyStatus_Exception(status) && python_exe && python_exe[0])
      status = PyConfig_SetBytesString(&config, &config.executable, python_exe);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
      char buf[512];
      snprintf(buf, sizeof buf, "deepcomp bridge: cannot start the Python interpreter: %s",
               status.err_msg ? status.err_msg : "(no message)");
      set_err(err, errlen, buf);
      return DCB_ERROR_LOCAL;
    }
    int rc = 0;
    if (site_dir && site_dir[0]) {
      /* the directory holding deepcomp_ase, with its .pth files (editable installs) */
      PyObject *site = PyImport_ImportModule("site");
      PyObject *res = site ? PyObject_CallMethod(site, "addsitedir", "s", site_dir) : NULL;
      if (!res) rc = fetch_error(err, errlen);
      Py_XDECREF(res);
      Py_XDECREF(site);
    }
    PyEval_SaveThread(); /* release the GIL; every call below takes it with PyGILState */
    return rc;
  }
  return DCB_OK;
}

DCB_EXPORT void *dcb_create(const dcb_create_args *a, double *cutoff, char *err, int errlen)
{
  PyGILState_STATE gil = PyGILState_Ensure();
  dcb_model *m = NULL;
  PyObject *mod = NULL, *names = NULL, *opts = NULL, *capsule = NULL, *logfn = NULL, *model = NULL,
           *cut = NULL;
  log_target *target = NULL;

  mod = PyImport_ImportModule(BRIDGE_MODULE);
  if (!mod) goto fail;

  names = PyList_New(a->ntypes);
  if (!names) goto fail;
  for (int i = 0; i < a->ntypes; ++i) {
    PyObject *s;
    if (a->type_names[i]) {
      s = PyUnicode_FromString(a->type_names[i]);
      if (!s) goto fail;
    } else {
      s = Py_None;
      Py_INCREF(s);
    }
    PyList_SET_ITEM(names, i, s);
  }

  opts = Py_BuildValue("{s:s,s:s,s:s,s:s,s:d,s:d,s:i}", "overflow", a->overflow, "device", a->device, "precision",
                       a->precision, "lammps_version", a->lammps_version ? a->lammps_version : "",
                       "energy_scale", a->energy_scale, "length_scale", a->length_scale, "gpu_id", a->gpu_id);
  if (!opts) goto fail;
  {
    PyObject *freq;
    if (a->has_check_frequency) freq = PyLong_FromLong(a->check_frequency);
    else {
      freq = Py_None;
      Py_INCREF(freq);
    }
    if (!freq || PyDict_SetItemString(opts, "check_frequency", freq) < 0) {
      Py_XDECREF(freq);
      goto fail;
    }
    Py_DECREF(freq);
  }

  target = (log_target *) calloc(1, sizeof(log_target));
  if (!target) {
    PyErr_NoMemory();
    goto fail;
  }
  target->fn = a->log;
  target->ctx = a->log_ctx;
  capsule = PyCapsule_New(target, "deepcomp.log_target", log_capsule_free);
  if (!capsule) {
    free(target);
    target = NULL;
    goto fail;
  }
  logfn = PyCFunction_New(&log_def, capsule);
  if (!logfn) goto fail;

  {
    /* model deviation settings (ABI 2) */
    PyObject *files = PyList_New(a->nmodels > 0 ? a->nmodels : 0);
    if (!files) goto fail;
    for (int k = 0; k < a->nmodels; ++k) {
      PyObject *s = PyUnicode_FromString(a->model_files[k]);
      if (!s) {
        Py_DECREF(files);
        goto fail;
      }
      PyList_SET_ITEM(files, k, s);
    }
    int bad = PyDict_SetItemString(opts, "model_files", files) < 0;
    Py_DECREF(files);
    PyObject *devi = Py_BuildValue("{s:i,s:s,s:i,s:i}", "out_freq", a->out_freq, "out_file",
                                   a->out_file ? a->out_file : "", "atomic", a->atomic, "append", a->append);
    if (bad || !devi) {
      Py_XDECREF(devi);
      goto fail;
    }
    PyObject *rel = a->has_relative ? PyFloat_FromDouble(a->relative) : (Py_INCREF(Py_None), Py_None);
    PyObject *relv = a->has_relative_v ? PyFloat_FromDouble(a->relative_v) : (Py_INCREF(Py_None), Py_None);
    bad = !rel || !relv || PyDict_SetItemString(devi, "relative", rel) < 0 ||
        PyDict_SetItemString(devi, "relative_v", relv) < 0 || PyDict_SetItemString(opts, "model_devi", devi) < 0;
    Py_XDECREF(rel);
    Py_XDECREF(relv);
    Py_DECREF(devi);
    if (bad) goto fail;
  }

  {
    /* frame / atomic parameter keywords (ABI 4), checked by the bridge once the models are loaded */
    static const char *const sources[] = {"none", "values", "compute", "fix"};
    const int fs = a->fparam_source >= 0 && a->fparam_source <= 3 ? a->fparam_source : 0;
    const int as = a->aparam_source >= 0 && a->aparam_source <= 3 ? a->aparam_source : 0;
    PyObject *fp = Py_BuildValue("{s:s,s:i}", "source", sources[fs], "count", a->nfparam);
    PyObject *ap = Py_BuildValue("{s:s,s:i}", "source", sources[as], "count", a->naparam);
    int bad = !fp || !ap || PyDict_SetItemString(opts, "fparam_input", fp) < 0 ||
        PyDict_SetItemString(opts, "aparam_input", ap) < 0;
    Py_XDECREF(fp);
    Py_XDECREF(ap);
    if (bad) goto fail;
  }

  model = PyObject_CallMethod(mod, "create", "sOiiiOO", a->model_file, names, a->comm_f, a->rank, a->nprocs,
                              opts, logfn);
  if (!model) goto fail;
  cut = PyObject_GetAttrString(model, "cutoff");
  if (!cut) goto fail;
  *cutoff = PyFloat_AsDouble(cut);
  if (PyErr_Occurred()) goto fail;

  m = (dcb_model *) calloc(1, sizeof(dcb_model));
  if (!m) {
    PyErr_NoMemory();
    goto fail;
  }
  m->model = model;
  m->log = target;
  model = NULL;
  goto done;

fail:
  fetch_error(err, errlen);
  if (target) target->fn = NULL;
  Py_CLEAR(model);

done:
  Py_XDECREF(cut);
  Py_XDECREF(logfn);
  Py_XDECREF(capsule);
  Py_XDECREF(opts);
  Py_XDECREF(names);
  Py_XDECREF(mod);
  PyGILState_Release(gil);
  return m;
}

static char empty_buffer[8];

static PyObject *view(const void *ptr, Py_ssize_t nbytes, int writable)
{
  if (!ptr || nbytes <= 0) {
    ptr = empty_buffer;
    nbytes = 0;
  }
  return PyMemoryView_FromMemory((char *) ptr, nbytes, writable ? PyBUF_WRITE : PyBUF_READ);
}

/* release a memoryview; fails if Python still holds an export of it */
static int release_view(PyObject *mv)
{
  if (!mv || mv == Py_None) return 0;
  PyObject *r = PyObject_CallMethod(mv, "release", NULL);
  if (!r) return -1;
  Py_DECREF(r);
  return 0;
}

DCB_EXPORT int dcb_compute(void *handle, dcb_compute_args *a, char *err, int errlen)
{
  dcb_model *m = (dcb_model *) handle;
  if (!m || !m->model) {
    set_err(err, errlen, "deepcomp bridge: compute called without a model");
    return DCB_ERROR_LOCAL;
  }
  PyGILState_STATE gil = PyGILState_Ensure();
  int rc = DCB_OK;
  const Py_ssize_t nall = (Py_ssize_t) a->nlocal + a->nghost;
  enum { X, F, TYPE, PI, PJ, EATOM, VATOM, TAG, CVATOM, FPARAM, APARAM, DEDFPARAM, NVIEW };
  PyObject *v[NVIEW] = {NULL};
  PyObject *res = NULL;

  v[X] = view(a->x, nall * 3 * (Py_ssize_t) sizeof(double), 0);
  v[F] = view(a->f, nall * 3 * (Py_ssize_t) sizeof(double), 1);
  v[TYPE] = view(a->type, nall * (Py_ssize_t) sizeof(int), 0);
  v[PI] = view(a->pair_i, (Py_ssize_t) a->npairs * (Py_ssize_t) sizeof(int), 0);
  v[PJ] = view(a->pair_j, (Py_ssize_t) a->npairs * (Py_ssize_t) sizeof(int), 0);
  if (a->eatom) v[EATOM] = view(a->eatom, nall * (Py_ssize_t) sizeof(double), 1);
  else {
    v[EATOM] = Py_None;
    Py_INCREF(Py_None);
  }
  if (a->vatom) v[VATOM] = view(a->vatom, nall * 6 * (Py_ssize_t) sizeof(double), 1);
  else {
    v[VATOM] = Py_None;
    Py_INCREF(Py_None);
  }
  if (a->tag) v[TAG] = view(a->tag, nall * (Py_ssize_t) sizeof(int), 0);
  else {
    v[TAG] = Py_None;
    Py_INCREF(Py_None);
  }
  if (a->cvatom) v[CVATOM] = view(a->cvatom, nall * 9 * (Py_ssize_t) sizeof(double), 1);
  else {
    v[CVATOM] = Py_None;
    Py_INCREF(Py_None);
  }
  if (a->fparam && a->dim_fparam > 0) v[FPARAM] = view(a->fparam, a->dim_fparam * (Py_ssize_t) sizeof(double), 0);
  else {
    v[FPARAM] = Py_None;
    Py_INCREF(Py_None);
  }
  if (a->aparam && a->dim_aparam > 0)
    v[APARAM] = view(a->aparam, (Py_ssize_t) a->nlocal * a->dim_aparam * (Py_ssize_t) sizeof(double), 0);
  else {
    v[APARAM] = Py_None;
    Py_INCREF(Py_None);
  }
  if (a->dedfparam && a->dim_fparam > 0)
    v[DEDFPARAM] = view(a->dedfparam, a->dim_fparam * (Py_ssize_t) sizeof(double), 1);
  else {
    v[DEDFPARAM] = Py_None;
    Py_INCREF(Py_None);
  }
  for (int k = 0; k < NVIEW; ++k)
    if (!v[k]) {
      rc = fetch_error(err, errlen);
      goto cleanup;
    }

  res = PyObject_CallMethod(m->model, "compute", "OOOOOiiOOiLOLOOOOi", v[X], v[F], v[TYPE], v[PI], v[PJ],
                            a->nlocal, a->nghost, v[EATOM], v[VATOM], a->need_virial, (long long) a->ntimestep,
                            v[TAG], (long long) a->natoms, v[CVATOM], v[FPARAM], v[APARAM], v[DEDFPARAM], a->probe);
  if (!res) {
    rc = fetch_error(err, errlen);
    goto cleanup;
  }
  /* (energy, virial6 or None) */
  {
    PyObject *e = NULL, *vir = NULL;
    if (!PyArg_ParseTuple(res, "OO", &e, &vir)) {
      rc = fetch_error(err, errlen);
      goto cleanup;
    }
    a->energy = PyFloat_AsDouble(e);
    a->have_virial = 0;
    if (!PyErr_Occurred() && vir != Py_None) {
      PyObject *seq = PySequence_Fast(vir, "virial must be a sequence of 6 floats");
      if (seq && PySequence_Fast_GET_SIZE(seq) == 6) {
        for (int k = 0; k < 6; ++k) a->virial[k] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, k));
        a->have_virial = 1;
      } else if (seq) {
        PyErr_SetString(PyExc_ValueError, "virial must have 6 components");
      }
      Py_XDECREF(seq);
    }
    if (PyErr_Occurred()) {
      rc = fetch_error(err, errlen);
      goto cleanup;
    }
  }

cleanup:
  Py_XDECREF(res);
  for (int k = 0; k < NVIEW; ++k) {
    if (v[k] && release_view(v[k]) < 0) {
      PyErr_Clear();
      if (rc == DCB_OK) {
        set_err(err, errlen,
                "deepcomp bridge: Python kept a reference to a LAMMPS array after compute() returned");
        rc = DCB_ERROR_LOCAL;
      }
    }
    Py_XDECREF(v[k]);
  }
  PyGILState_Release(gil);
  return rc;
}

DCB_EXPORT int dcb_finish(void *handle, char *err, int errlen)
{
  dcb_model *m = (dcb_model *) handle;
  if (!m || !m->model) return DCB_OK;
  PyGILState_STATE gil = PyGILState_Ensure();
  int rc = DCB_OK;
  PyObject *r = PyObject_CallMethod(m->model, "finish", NULL);
  if (!r) rc = fetch_error(err, errlen);
  Py_XDECREF(r);
  PyGILState_Release(gil);
  return rc;
}

DCB_EXPORT int dcb_param_dims(void *handle, int *dim_fparam, int *dim_aparam)
{
  dcb_model *m = (dcb_model *) handle;
  *dim_fparam = *dim_aparam = 0;
  if (!m || !m->model) return DCB_ERROR_LOCAL;
  PyGILState_STATE gil = PyGILState_Ensure();
  int rc = DCB_OK;
  PyObject *f = PyObject_GetAttrString(m->model, "dim_fparam");
  PyObject *a = f ? PyObject_GetAttrString(m->model, "dim_aparam") : NULL;
  if (f && a) {
    *dim_fparam = (int) PyLong_AsLong(f);
    *dim_aparam = (int) PyLong_AsLong(a);
  }
  if (PyErr_Occurred()) {
    PyErr_Clear();
    rc = DCB_ERROR_LOCAL;
  }
  Py_XDECREF(f);
  Py_XDECREF(a);
  PyGILState_Release(gil);
  return rc;
}

DCB_EXPORT int dcb_needs_pairs(void *handle)
{
  dcb_model *m = (dcb_model *) handle;
  if (!m || !m->model) return 1;
  PyGILState_STATE gil = PyGILState_Ensure();
  int needs = 1; /* the safe answer: LAMMPS builds the list */
  PyObject *v = PyObject_GetAttrString(m->model, "needs_pairs");
  if (v) {
    needs = PyObject_IsTrue(v) == 0 ? 0 : 1;
    Py_DECREF(v);
  }
  PyErr_Clear();
  PyGILState_Release(gil);
  return needs;
}

DCB_EXPORT void dcb_destroy(void *handle)
{
  dcb_model *m = (dcb_model *) handle;
  if (!m) return;
  /* never touch Python while (or after) it shuts down */
  if (Py_IsInitialized() && !DCB_FINALIZING()) {
    PyGILState_STATE gil = PyGILState_Ensure();
    if (m->log) m->log->fn = NULL;
    PyObject *r = PyObject_CallMethod(m->model, "close", NULL);
    if (!r) PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(m->model);
    PyGILState_Release(gil);
  }
  free(m);
}
