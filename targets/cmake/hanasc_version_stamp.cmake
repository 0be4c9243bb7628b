# cmake -DPYTHON=python3 -DSTAMP=file -P hanasc_version_stamp.cmake: write the installed hanasc and TVM
# versions to STAMP, touching it only when they changed (HanascModel.cmake's builds depend on it).
execute_process(
  COMMAND "${PYTHON}" -c "from importlib.metadata import version as v; print(' '.join(p + '==' + v(p) for p in ('hanasc', 'apache-tvm', 'apache-tvm-ffi')))"
  OUTPUT_VARIABLE versions RESULT_VARIABLE failed)
if(failed)
  message(FATAL_ERROR "hanasc_version_stamp: ${PYTHON} cannot read the hanasc version")
endif()
file(WRITE "${STAMP}.new" "${versions}")
file(COPY_FILE "${STAMP}.new" "${STAMP}" ONLY_IF_DIFFERENT)
file(REMOVE "${STAMP}.new")
