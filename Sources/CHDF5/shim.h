#ifndef MMOE_CHDF5_SHIM_H
#define MMOE_CHDF5_SHIM_H
#include <hdf5.h>

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
#endif
