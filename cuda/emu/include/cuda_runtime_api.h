// simdex CUDA emulator: stands in for the toolkit header of the same name.
#pragma once
#include "simdex_emu/runtime.h"
