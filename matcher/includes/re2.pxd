# The parts of RE2's C++ API the kernels use (headers from libre2-dev).
from libc.stdint cimport int64_t
from libcpp cimport bool
from libcpp.string cimport string
from libcpp.vector cimport vector


cdef extern from "re2/stringpiece.h" namespace "re2" nogil:
    cdef cppclass StringPiece:
        StringPiece()
        StringPiece(const char* data, size_t size)


cdef extern from "re2/re2.h" namespace "re2" nogil:
    cdef enum Anchor "re2::RE2::Anchor":
        UNANCHORED "re2::RE2::UNANCHORED"
        ANCHOR_START "re2::RE2::ANCHOR_START"

    cdef cppclass Options "re2::RE2::Options":
        Options()
        void set_log_errors(bool)
        void set_max_mem(int64_t)
        void set_case_sensitive(bool)

    cdef cppclass RE2 "re2::RE2":
        RE2(const StringPiece& pattern, const Options& options)
        bool ok()
        const string& error()
        bool Match(const StringPiece& text, size_t startpos, size_t endpos, Anchor anchor,
                   StringPiece* submatch, int nsubmatch)

    string QuoteMeta "re2::RE2::QuoteMeta"(const StringPiece& unquoted)


cdef extern from "re2/set.h" namespace "re2" nogil:
    cdef enum SetErrorKind "re2::RE2::Set::ErrorKind":
        kNoError "re2::RE2::Set::kNoError"

    cdef cppclass SetErrorInfo "re2::RE2::Set::ErrorInfo":
        SetErrorKind kind

    cdef cppclass RE2Set "re2::RE2::Set":
        RE2Set(const Options& options, Anchor anchor)
        int Add(const StringPiece& pattern, string* error)
        bool Compile()
        bool Match(const StringPiece& text, vector[int]* v, SetErrorInfo* error_info)


cdef extern from "re2/filtered_re2.h" namespace "re2" nogil:
    cdef cppclass FilteredRE2 "re2::FilteredRE2":
        FilteredRE2(int min_atom_len)
        int Add(const StringPiece& pattern, const Options& options, int* id)  # 0: no error
        void Compile(vector[string]* strings_to_match)
        void AllPotentials(const vector[int]& atoms, vector[int]* potential_regexps)
