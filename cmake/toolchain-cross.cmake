# Cross-compiling for a Raspberry Pi-class Debian target against a sysroot of
# Debian's own packages (scripts/cross.sh builds it), tests run under qemu-user.
#
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-cross.cmake -DDS_CROSS_ARCH=arm64 \
#         [-DDS_SYSROOT=/path/to/sysroot] ...
#
# DS_CROSS_ARCH: arm64 (64-bit Raspberry Pi OS) or armhf (32-bit, ARMv7 hard-float).
# DS_SYSROOT defaults to .cross/<arch>/sysroot in the source tree.
set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES DS_CROSS_ARCH DS_SYSROOT)
if(NOT DS_CROSS_ARCH)
  set(DS_CROSS_ARCH "$ENV{DS_CROSS_ARCH}")
endif()
if(DS_CROSS_ARCH STREQUAL "arm64")
  set(CMAKE_SYSTEM_PROCESSOR aarch64)
  set(ds_triple aarch64-linux-gnu)
  set(ds_qemu qemu-aarch64)
elseif(DS_CROSS_ARCH STREQUAL "armhf")
  set(CMAKE_SYSTEM_PROCESSOR arm)
  set(ds_triple arm-linux-gnueabihf)
  set(ds_qemu qemu-arm)
else()
  message(FATAL_ERROR "toolchain-cross.cmake: set DS_CROSS_ARCH to arm64 or armhf (got '${DS_CROSS_ARCH}')")
endif()
if(NOT DS_SYSROOT)
  get_filename_component(DS_SYSROOT "${CMAKE_CURRENT_LIST_DIR}/../.cross/${DS_CROSS_ARCH}/sysroot" ABSOLUTE)
endif()
if(NOT EXISTS "${DS_SYSROOT}/usr/include/${ds_triple}")
  message(FATAL_ERROR "toolchain-cross.cmake: ${DS_SYSROOT} is not a ${DS_CROSS_ARCH} sysroot (scripts/cross.sh ${DS_CROSS_ARCH} builds one)")
endif()

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${ds_triple}-gcc)
set(CMAKE_SYSROOT "${DS_SYSROOT}")
set(CMAKE_LIBRARY_ARCHITECTURE ${ds_triple})

# Libraries and headers from the sysroot only; programs (protoc-c) from the host.
set(CMAKE_FIND_ROOT_PATH "${DS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the sysroot's .pc files, never the host's.
set(ENV{PKG_CONFIG_DIR} "")
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_LIBDIR} "${DS_SYSROOT}/usr/lib/${ds_triple}/pkgconfig:${DS_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${DS_SYSROOT}")

# ctest runs target programs through qemu-user with the sysroot's loader and
# libraries; tests/CMakeLists.txt also wraps the deltaslice binary with it.
find_program(DS_QEMU ${ds_qemu})
if(NOT DS_QEMU)
  message(FATAL_ERROR "toolchain-cross.cmake: ${ds_qemu} not found (apt-get install qemu-user)")
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR "${DS_QEMU};-L;${DS_SYSROOT}")
