// simdex CUDA emulator: stands in for the CUB header of the same name.
#pragma once
#include "simdex_emu/cub.h"
