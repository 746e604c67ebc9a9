# packaging/package.cmake - the Debian package: `cpack` in the build folder
# writes deltaslice_<version>_<arch>.deb.  Included by the top-level
# CMakeLists.txt after the deltaslice target exists.
#
# The install rules describe the package's layout with absolute paths (the
# units name /usr/bin/deltaslice and /etc/deltaslice/config.yml), so
# `cmake --install` places files where the package would:
#   /usr/bin/deltaslice                      the binary
#   /usr/share/man/man1/deltaslice*.1.gz     man pages made from --help (help2man)
#   /etc/deltaslice/config.yml               the units' configuration (a conffile)
#   /usr/lib/deltaslice/                     the limit scripts, unit-egress.sh, make-certs.sh
#   /usr/lib/systemd/system/                 deltaslice-{master,trainer,worker@}.service, deltaslice.slice
#   /usr/lib/sysusers.d/deltaslice.conf      the system user 'deltaslice'
#   /usr/share/deltaslice/sample.mp4         the sample clip the shipped config plays
#   /usr/share/doc/deltaslice/               README, experiments, example drop-ins

set(ds_pkg ${CMAKE_CURRENT_LIST_DIR})

# --- the package's architecture: the target's, not the host's ---------------
# Native: dpkg's own architecture.  Cross: the compiler's GNU triplet
# (aarch64-linux-gnu, arm-linux-gnueabihf) through dpkg-architecture, else the
# target processor.  -DDS_DEB_ARCH=... overrides.
set(DS_DEB_ARCH "" CACHE STRING "Debian architecture of the package (empty: the build's target)")
if(DS_DEB_ARCH)
  set(ds_deb_arch ${DS_DEB_ARCH})
elseif(NOT CMAKE_CROSSCOMPILING)
  execute_process(COMMAND dpkg --print-architecture OUTPUT_VARIABLE ds_deb_arch
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
else()
  set(ds_triplet ${CMAKE_C_COMPILER_TARGET})
  if(NOT ds_triplet)
    set(ds_triplet ${CMAKE_LIBRARY_ARCHITECTURE})
  endif()
  if(NOT ds_triplet)
    execute_process(COMMAND ${CMAKE_C_COMPILER} -dumpmachine OUTPUT_VARIABLE ds_triplet
      OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  if(ds_triplet)
    execute_process(COMMAND dpkg-architecture -t${ds_triplet} -qDEB_HOST_ARCH
      OUTPUT_VARIABLE ds_deb_arch OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
endif()
if(NOT ds_deb_arch)
  string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" ds_cpu)
  if(ds_cpu MATCHES "^(aarch64|arm64)$")
    set(ds_deb_arch arm64)
  elseif(ds_cpu MATCHES "^arm")
    set(ds_deb_arch armhf)
  elseif(ds_cpu MATCHES "^(x86_64|amd64)$")
    set(ds_deb_arch amd64)
  elseif(ds_cpu MATCHES "^i.86$")
    set(ds_deb_arch i386)
  else()
    message(FATAL_ERROR "packaging: no Debian architecture for processor '${CMAKE_SYSTEM_PROCESSOR}': set -DDS_DEB_ARCH=")
  endif()
endif()

# --- man pages from --help (help2man), one per command -----------------------
# A cross-build runs the target binary through CMAKE_CROSSCOMPILING_EMULATOR.
find_program(HELP2MAN help2man)
set(ds_runner "")
if(CMAKE_CROSSCOMPILING)
  foreach(arg IN LISTS CMAKE_CROSSCOMPILING_EMULATOR)
    string(APPEND ds_runner "'${arg}' ")
  endforeach()
endif()
set(ds_man_ok FALSE)
if(NOT HELP2MAN)
  message(WARNING "packaging: help2man not found (apt-get install help2man): the package gets no man pages")
elseif(CMAKE_CROSSCOMPILING AND NOT CMAKE_CROSSCOMPILING_EMULATOR)
  message(WARNING "packaging: cross-build without CMAKE_CROSSCOMPILING_EMULATOR cannot run --help: no man pages")
else()
  set(ds_man_ok TRUE)
endif()
# page|one-line description|subcommand
set(ds_man_pages
  "deltaslice|collaborative CNN inference on video across a chain of devices|"
  "deltaslice-run|run trainer, workers and master on this machine|run"
  "deltaslice-master|decode the video and drive frames through the workers|master"
  "deltaslice-worker|serve one slice of the CNN for the master|worker"
  "deltaslice-trainer|learn per-layer change sparsity and serve the predictors|trainer"
  "deltaslice-config|check a configuration: where each role listens, how it authenticates|config"
  "deltaslice-trace|merge deltaslice trace files into a timeline|trace"
  "deltaslice-dag|draw a model's layer DAG with costs and cut points|dag"
  "deltaslice-zoo|write a built-in CNN trunk as an ONNX file|zoo"
  "deltaslice-infer|run a model on one raw float32 tensor or on a video's frames|infer")
set(ds_man_dir ${CMAKE_BINARY_DIR}/man)
set(ds_man_outputs "")
if(ds_man_ok)
  foreach(entry IN LISTS ds_man_pages)
    string(REPLACE "|" ";" parts "${entry}")
    list(GET parts 0 page)
    list(GET parts 1 summary)
    list(LENGTH parts n)
    set(sub "")
    if(n GREATER 2)
      list(GET parts 2 sub)
    endif()
    # help2man names the page after the program it runs: a wrapper per page
    # (help-for-man.sh puts the --help text in the shape help2man reads).
    file(GENERATE OUTPUT ${ds_man_dir}/bin/${page} CONTENT
      "#!/bin/sh\nexec '${ds_pkg}/man/help-for-man.sh' '${sub}' \"$1\" ${ds_runner}'$<TARGET_FILE:deltaslice>'\n")
    set(include ${ds_pkg}/man/see-also.h2m)
    if(EXISTS ${ds_pkg}/man/${page}.h2m)
      set(include ${ds_pkg}/man/${page}.h2m)
    endif()
    add_custom_command(OUTPUT ${ds_man_dir}/${page}.1
      COMMAND chmod 755 ${ds_man_dir}/bin/${page}   # file(GENERATE) sets modes only from CMake 3.19
      COMMAND ${HELP2MAN} --no-info --section=1 --name=${summary}
              --version-string=${PROJECT_VERSION} --source=deltaslice
              --manual=deltaslice --include=${include}
              --output=${ds_man_dir}/${page}.1 ${ds_man_dir}/bin/${page}
      COMMAND gzip -9nf -k ${ds_man_dir}/${page}.1
      BYPRODUCTS ${ds_man_dir}/${page}.1.gz
      DEPENDS deltaslice ${include} ${ds_man_dir}/bin/${page} ${ds_pkg}/man/help-for-man.sh
      COMMENT "help2man: ${page}.1" VERBATIM)
    list(APPEND ds_man_outputs ${ds_man_dir}/${page}.1)
  endforeach()
  add_custom_target(ds_man ALL DEPENDS ${ds_man_outputs})
endif()

# --- install rules: the package's contents ----------------------------------
install(TARGETS deltaslice RUNTIME DESTINATION /usr/bin)
foreach(page IN LISTS ds_man_outputs)
  install(FILES ${page}.gz DESTINATION /usr/share/man/man1)
endforeach()
install(FILES ${ds_pkg}/config.yml DESTINATION /etc/deltaslice)
install(PROGRAMS
  ${CMAKE_SOURCE_DIR}/scripts/limit-bandwidth.sh ${CMAKE_SOURCE_DIR}/scripts/limit-cpu.sh
  ${CMAKE_SOURCE_DIR}/scripts/ds-limited.sh ${ds_pkg}/unit-egress.sh
  ${CMAKE_SOURCE_DIR}/scripts/make-certs.sh
  DESTINATION /usr/lib/deltaslice)
install(FILES ${CMAKE_SOURCE_DIR}/scripts/limits-common.sh DESTINATION /usr/lib/deltaslice)
install(FILES
  ${ds_pkg}/systemd/deltaslice-master.service ${ds_pkg}/systemd/deltaslice-trainer.service
  ${ds_pkg}/systemd/deltaslice-worker@.service ${ds_pkg}/systemd/deltaslice.slice
  DESTINATION /usr/lib/systemd/system)
install(FILES ${ds_pkg}/sysusers.conf DESTINATION /usr/lib/sysusers.d RENAME deltaslice.conf)
install(FILES ${CMAKE_SOURCE_DIR}/data/sample.mp4 DESTINATION /usr/share/deltaslice)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/experiments.md
  DESTINATION /usr/share/doc/deltaslice)
install(FILES ${CMAKE_SOURCE_DIR}/data/README.md DESTINATION /usr/share/doc/deltaslice RENAME sample.md)
install(FILES ${ds_pkg}/examples/worker-limits.conf ${ds_pkg}/examples/master-limits.conf
  DESTINATION /usr/share/doc/deltaslice/examples)
# The results subscriber and the messages it compiles at start-up.
install(PROGRAMS ${CMAKE_SOURCE_DIR}/examples/subscribe.py
  DESTINATION /usr/share/doc/deltaslice/examples)
install(FILES ${CMAKE_SOURCE_DIR}/src/rpc/deltaslice.proto
  DESTINATION /usr/share/doc/deltaslice/examples)

# --- the .deb -------------------------------------------------------------------
# Depends: dpkg-shlibdeps on a native build (exact), else bookworm's runtime
# packages of the libraries the binary links (the same on arm64 and armhf;
# tests/e2e/package.sh checks this list against dpkg-shlibdeps natively).
set(DS_DEB_LIB_DEPENDS
  "libavcodec59 (>= 7:5.0), libavformat59 (>= 7:5.0), libavutil57 (>= 7:5.0), libswscale6 (>= 7:5.0), \
libc6 (>= 2.34), libgrpc29 (>= 1.51.1), liblbfgs0 (>= 1.10), liblz4-1 (>= 0.0~r130), \
libprotobuf-c1 (>= 1.0.1), libpthreadpool0, libxnnpack0, libyaml-0-2, libzstd1 (>= 1.5.2)")
# The library video.c loads when a camera or lavfi source is opened
# (dlopen: dpkg-shlibdeps cannot see it).
set(ds_dlopen_depends "libavdevice59 (>= 7:5.0)")
# The limit scripts (bash, tc, setpriv) and the units' user creation.
set(ds_script_depends "bash, iproute2, util-linux, systemd | adduser, ${ds_dlopen_depends}")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME deltaslice)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "deltaslice maintainers <deltaslice@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "collaborative CNN inference on video across a chain of devices")
# The summary is the synopsis line; this is the extended description.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "A master decodes video and sends every frame through a chain of workers
(a Raspberry Pi, an edge PC, a cloud VM), each running a slice of a CNN;
only what changed since the previous frame travels. A trainer learns
per-layer change sparsity so the master's scheduler can choose the cuts.

Ships the deltaslice binary, systemd units per role
(deltaslice-master, deltaslice-trainer, deltaslice-worker@N) running as
the user deltaslice, and scripts to cap a role's CPU and bandwidth.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${ds_deb_arch})
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_STRIP_FILES ON)   # CMAKE_STRIP: the cross toolchain's strip on a cross-build
if(NOT CMAKE_CROSSCOMPILING AND NOT DS_DEB_ARCH)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "${ds_script_depends}")
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "${DS_DEB_LIB_DEPENDS}, ${ds_script_depends}")
endif()
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "nftables")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "graphviz, openssl")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${ds_pkg}/debian/conffiles ${ds_pkg}/debian/postinst ${ds_pkg}/debian/prerm ${ds_pkg}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# For the test: the explicit list, to compare with dpkg-shlibdeps.
file(WRITE ${CMAKE_BINARY_DIR}/packaging/lib-depends.txt "${DS_DEB_LIB_DEPENDS}\n")
file(WRITE ${CMAKE_BINARY_DIR}/packaging/dlopen-depends.txt "${ds_dlopen_depends}\n")
include(CPack)
