# HanascModel.cmake: compile a model with hanasc as a build step and link it (docs/deploy-c.md).
#
#   execute_process(COMMAND python3 -m hanasc.cmake OUTPUT_VARIABLE HANASC_CMAKE_DIR
#                   OUTPUT_STRIP_TRAILING_WHITESPACE)
#   list(APPEND CMAKE_MODULE_PATH "${HANASC_CMAKE_DIR}")
#   include(HanascModel)
#   hanasc_add_model(classifier MODEL m.onnx TARGET cortex-a78 BUDGET 8ms DATA calib.npz
#                    [CONFIG c.json] [OUT dir] [STATIC] [ARGS --memory 2MB ...])
#   target_link_libraries(app PRIVATE classifier)
#
# Without CONFIG, `hanasc compile` searches (writing OUT/compile/) and `hanasc apply` replays the Config it
# chose into the target's bundle; with CONFIG, `hanasc apply` alone builds the bundle (BUDGET unused). The
# bundle (C API header, libraries, rt/) lands in OUT/apply/<target>/ (OUT defaults to
# ${CMAKE_CURRENT_BINARY_DIR}/NAME). The step re-runs only when the model, the Config, the data or the
# installed hanasc/TVM versions change. NAME is an INTERFACE target linking the bundle's shared library
# (STATIC: its static library and what that needs). A missing file or an unknown target stops CMake at
# configure time with one line naming it; hanasc writes its outputs atomically (nothing half-written).
include_guard(GLOBAL)

set(_HANASC_MODEL_DIR "${CMAKE_CURRENT_LIST_DIR}")
if(NOT HANASC_EXECUTABLE)
  find_program(HANASC_EXECUTABLE hanasc)
endif()
if(NOT HANASC_PYTHON)
  find_program(HANASC_PYTHON NAMES python3 python)
endif()

# Errors start with a space: CMake prints such a message as it is, on one line (it wraps the others).
function(_hanasc_existing_file name kind path out)
  get_filename_component(abs "${path}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(NOT EXISTS "${abs}" OR IS_DIRECTORY "${abs}")
    message(FATAL_ERROR " hanasc_add_model(${name}): ${kind} file not found: ${abs}")
  endif()
  set(${out} "${abs}" PARENT_SCOPE)
endfunction()

function(hanasc_add_model NAME)
  cmake_parse_arguments(PARSE_ARGV 1 HM "STATIC" "MODEL;TARGET;BUDGET;DATA;CONFIG;OUT" "ARGS")
  if(HM_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR " hanasc_add_model(${NAME}): unknown arguments: ${HM_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT HM_MODEL)
    message(FATAL_ERROR " hanasc_add_model(${NAME}): MODEL is required")
  endif()
  if(NOT HANASC_EXECUTABLE OR NOT HANASC_PYTHON)
    message(FATAL_ERROR " hanasc_add_model(${NAME}): the hanasc command was not found (pip install hanasc, "
                        "or set HANASC_EXECUTABLE and HANASC_PYTHON)")
  endif()
  _hanasc_existing_file(${NAME} MODEL "${HM_MODEL}" model)
  set(depends "${model}")
  set(data_args "")
  if(HM_DATA)
    _hanasc_existing_file(${NAME} DATA "${HM_DATA}" data)
    list(APPEND depends "${data}")
    set(data_args --data "${data}")
  endif()
  if(HM_CONFIG)
    _hanasc_existing_file(${NAME} CONFIG "${HM_CONFIG}" config)
    list(APPEND depends "${config}")
  elseif(NOT HM_BUDGET)
    message(FATAL_ERROR " hanasc_add_model(${NAME}): give BUDGET (for hanasc compile) or CONFIG (hanasc apply)")
  endif()
  if(NOT HM_TARGET)
    set(HM_TARGET host)
  endif()
  execute_process(
    COMMAND "${HANASC_PYTHON}" -c "import sys\nfrom hanasc.targets.registry import get_target\ntry: print(get_target(sys.argv[1]).name)\nexcept Exception as e: sys.exit(str(e))" "${HM_TARGET}"
    OUTPUT_VARIABLE target OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE target_error RESULT_VARIABLE target_failed)
  if(target_failed)
    string(REGEX REPLACE "\n.*" "" target_error "${target_error}")
    message(FATAL_ERROR " hanasc_add_model(${NAME}): TARGET ${HM_TARGET}: ${target_error}")
  endif()
  if(NOT HM_OUT)
    set(HM_OUT "${CMAKE_CURRENT_BINARY_DIR}/${NAME}")
  endif()
  get_filename_component(out "${HM_OUT}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
  set(bundle "${out}/apply/${target}")

  # The hanasc and TVM versions, rewritten only when they change (checked on every build).
  set(stamp "${CMAKE_CURRENT_BINARY_DIR}/${NAME}.hanasc-version")
  add_custom_target(${NAME}_hanasc_version
    COMMAND "${CMAKE_COMMAND}" -DPYTHON=${HANASC_PYTHON} -DSTAMP=${stamp}
            -P "${_HANASC_MODEL_DIR}/hanasc_version_stamp.cmake"
    BYPRODUCTS "${stamp}" VERBATIM)
  list(APPEND depends "${stamp}")

  if(HM_CONFIG)
    set(apply_config "${config}")
    set(search_command "")
  else()
    set(apply_config "${out}/compile/config.json")
    set(search_command COMMAND "${HANASC_EXECUTABLE}" compile "${model}" --target ${target} --budget ${HM_BUDGET}
                               ${data_args} --out "${out}/compile" ${HM_ARGS})
  endif()
  set(library "${bundle}/lib/libhanasc_model.so")
  set(archive "${bundle}/lib/libhanasc_model.a")
  add_custom_command(
    OUTPUT "${library}" "${archive}" "${bundle}/include/hanasc_model.h"
    ${search_command}
    COMMAND "${HANASC_EXECUTABLE}" apply "${model}" "${apply_config}" --target ${target} ${data_args}
            --out "${out}/apply"
    DEPENDS ${depends}
    COMMENT "hanasc: ${NAME} (${HM_MODEL} for ${target})"
    VERBATIM)
  add_custom_target(${NAME}_hanasc DEPENDS "${library}")
  add_dependencies(${NAME}_hanasc ${NAME}_hanasc_version)

  add_library(${NAME} INTERFACE)
  add_dependencies(${NAME} ${NAME}_hanasc)
  target_include_directories(${NAME} INTERFACE "${bundle}/include")
  set(runtime "${bundle}/rt/libtvm_runtime.so" "${bundle}/rt/libtvm_ffi.so")
  if(HM_STATIC)
    target_link_libraries(${NAME} INTERFACE "${archive}" ${runtime} stdc++ dl pthread m)
  else()
    target_link_libraries(${NAME} INTERFACE "${library}" ${runtime})
  endif()
  set_target_properties(${NAME} PROPERTIES INTERFACE_HANASC_BUNDLE "${bundle}")
endfunction()
