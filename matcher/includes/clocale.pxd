# POSIX 2008 locale objects (glibc, musl, macOS), for parsing numbers in the C locale whatever
# locale the process has set: strtod reads "1.5" as 1 under a locale whose decimal point is ",".
cdef extern from "<locale.h>" nogil:
    ctypedef void* locale_t
    int LC_NUMERIC_MASK
    locale_t newlocale(int category_mask, const char* locale, locale_t base)


cdef extern from "<stdlib.h>" nogil:
    double strtod_l(const char* text, char** end, locale_t locale)
