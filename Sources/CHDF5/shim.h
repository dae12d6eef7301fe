#ifndef MMOE_CHDF5_SHIM_H
#define MMOE_CHDF5_SHIM_H
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

/* HDF5 exposes its constants as macros over `*_g` globals that need H5open() first; Swift
 * cannot import them (and in Swift 6 mode the mutable globals do not compile). These shims
 * are the only way the Swift side reaches them. */

static inline hid_t mmoe_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t mmoe_h5s_all(void) { return H5S_ALL; }
static inline hid_t mmoe_h5e_default(void) { return H5E_DEFAULT; }
static inline unsigned mmoe_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned mmoe_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline size_t mmoe_h5t_variable(void) { return H5T_VARIABLE; }

static inline hid_t mmoe_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t mmoe_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t mmoe_h5t_native_int8(void) { return H5T_NATIVE_INT8; }
static inline hid_t mmoe_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t mmoe_h5t_native_uint16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t mmoe_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t mmoe_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t mmoe_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t mmoe_h5t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t mmoe_h5t_std_i8le(void) { return H5T_STD_I8LE; }
static inline hid_t mmoe_h5t_std_u16le(void) { return H5T_STD_U16LE; }
static inline hid_t mmoe_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t mmoe_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t mmoe_h5p_link_create(void) { return H5P_LINK_CREATE; }

/// Silences HDF5's automatic printing of its error stack to stderr (process-wide).
static inline herr_t mmoe_h5_silence_errors(void) { return H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/// Collects the innermost-first descriptions of the current default error stack into buf.
typedef struct { char *buf; size_t cap; size_t len; } mmoe_h5_error_text;

static inline herr_t mmoe_h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    mmoe_h5_error_text *t = (mmoe_h5_error_text *)data;
    (void)n;
    if (t->len + 4 >= t->cap) return 0;
    const char *d = (e && e->desc) ? e->desc : "";
    const char *f = (e && e->func_name) ? e->func_name : "";
    int w = snprintf(t->buf + t->len, t->cap - t->len, "%s%s: %s", t->len ? "; " : "", f, d);
    if (w > 0) { t->len += (size_t)w; if (t->len >= t->cap) t->len = t->cap - 1; }
    return 0;
}

/// Writes HDF5's current error stack as one line into buf (NUL-terminated), then clears it.
static inline void mmoe_h5_error_describe(char *buf, size_t cap) {
    mmoe_h5_error_text t = { buf, cap, 0 };
    if (cap == 0) return;
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, mmoe_h5_walk_cb, &t);
    H5Eclear2(H5E_DEFAULT);
}

/// An IEEE half-precision little-endian type, built the way h5py builds it
/// (HDF5 1.10 has no predefined one). Caller closes it.
static inline hid_t mmoe_h5t_create_f16(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 15) < 0
        || H5Tset_precision(t, 16) < 0) { H5Tclose(t); return -1; }
    return t;
}

/* Lists the datasets below a group (recursively) as NUL-separated paths relative to it.
 * Any link that is not a hard link (soft, external, user-defined) stops the walk: a file we
 * read must not make us open other files. */
typedef struct { char *buf; size_t cap; size_t len; size_t count; int bad_link; } mmoe_h5_names;

static inline herr_t mmoe_h5_visit_cb(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    mmoe_h5_names *n = (mmoe_h5_names *)data;
    if (info->type != H5L_TYPE_HARD) { n->bad_link = 1; return 1; }
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) return -1;
    H5I_type_t type = H5Iget_type(obj);
    H5Oclose(obj);
    if (type != H5I_DATASET) return 0;
    size_t length = strlen(name) + 1;
    if (n->buf && n->len + length <= n->cap) memcpy(n->buf + n->len, name, length);
    n->len += length;
    n->count += 1;
    return 0;
}

/// Returns 0 on success, -1 on an HDF5 error, -2 when a non-hard link was found.
/// Call with buf = NULL first to learn the size (*needed), then with a buffer of that size.
static inline int mmoe_h5_list_datasets(hid_t group, char *buf, size_t cap, size_t *needed, size_t *count) {
    mmoe_h5_names n = { buf, cap, 0, 0, 0 };
    herr_t status = H5Lvisit(group, H5_INDEX_NAME, H5_ITER_INC, mmoe_h5_visit_cb, &n);
    *needed = n.len;
    *count = n.count;
    if (n.bad_link) return -2;
    return status < 0 ? -1 : 0;
}

/* Checks a whole file before anything is read from it: no external or user-defined link
 * anywhere, no dataset with external raw storage (H5Pset_external) or a virtual layout (VDS
 * mapping other files), link paths at most max_depth deep and at most max_count links.
 * The walk stops at the first problem, so its cost is bounded by the limits. */
typedef struct {
    size_t count; size_t max_count; int max_depth; int problem; char object[512];
} mmoe_h5_scan;

enum { MMOE_H5_SCAN_OK = 0, MMOE_H5_SCAN_EXTERNAL_LINK = 1, MMOE_H5_SCAN_USER_LINK = 2, MMOE_H5_SCAN_EXTERNAL_STORAGE = 3,
       MMOE_H5_SCAN_VIRTUAL = 4, MMOE_H5_SCAN_TOO_DEEP = 5, MMOE_H5_SCAN_TOO_MANY = 6, MMOE_H5_SCAN_ERROR = 7 };

static inline herr_t mmoe_h5_scan_cb(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    mmoe_h5_scan *s = (mmoe_h5_scan *)data;
    int depth = 1;
    for (const char *c = name; *c; c++) if (*c == '/') depth++;
    snprintf(s->object, sizeof s->object, "/%s", name);
    if (++s->count > s->max_count) { s->problem = MMOE_H5_SCAN_TOO_MANY; return 1; }
    if (depth > s->max_depth) { s->problem = MMOE_H5_SCAN_TOO_DEEP; return 1; }
    if (info->type == H5L_TYPE_EXTERNAL) { s->problem = MMOE_H5_SCAN_EXTERNAL_LINK; return 1; }
    if (info->type != H5L_TYPE_HARD && info->type != H5L_TYPE_SOFT) { s->problem = MMOE_H5_SCAN_USER_LINK; return 1; }
    if (info->type == H5L_TYPE_SOFT) return 0;
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) { s->problem = MMOE_H5_SCAN_ERROR; return 1; }
    if (H5Iget_type(obj) == H5I_DATASET) {
        hid_t dcpl = H5Dget_create_plist(obj);
        if (dcpl < 0) { H5Oclose(obj); s->problem = MMOE_H5_SCAN_ERROR; return 1; }
        if (H5Pget_layout(dcpl) == H5D_VIRTUAL) s->problem = MMOE_H5_SCAN_VIRTUAL;
        else if (H5Pget_external_count(dcpl) != 0) s->problem = MMOE_H5_SCAN_EXTERNAL_STORAGE;
        H5Pclose(dcpl);
    }
    H5Oclose(obj);
    return s->problem ? 1 : 0;
}

/// Scans the file `file` from its root; returns one of the MMOE_H5_SCAN_* codes and names
/// the offending object in `object` (NUL-terminated, at most `cap` bytes).
static inline int mmoe_h5_scan_file(hid_t file, size_t max_count, int max_depth, char *object, size_t cap) {
    mmoe_h5_scan s;
    memset(&s, 0, sizeof s);
    s.max_count = max_count;
    s.max_depth = max_depth;
    herr_t status = H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, mmoe_h5_scan_cb, &s);
    if (cap > 0) { strncpy(object, s.object, cap - 1); object[cap - 1] = 0; }
    if (s.problem) return s.problem;
    return status < 0 ? MMOE_H5_SCAN_ERROR : MMOE_H5_SCAN_OK;
}

/// Whether the link `name` exists below `loc` (checking each path component).
static inline int mmoe_h5_exists(hid_t loc, const char *name) {
    return H5Lexists(loc, name, H5P_DEFAULT) > 0;
}
#endif
