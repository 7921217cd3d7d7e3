// Finds and loads the CUDA module (see cuda/module.hpp) the first time CUDA is asked for.
//
// Where it looks, first match wins:
//   1. SKIPGANOMALY_CUDA_MODULE in the environment, when set: that file and nothing else;
//   2. the folder of the binary holding this library (libskipganomaly.so, or the program
//      itself when it links the static library), then ../lib beside it;
//   3. the dynamic loader's own search by file name: LD_LIBRARY_PATH, the program's RUNPATH,
//      the system folders.
// A module that exists but cannot be loaded (typically: libcudnn.so.9 or libcudart is not
// installed) stops the search, and the loader's message becomes the reason CUDA is unusable.
#include "cuda/module.hpp"

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/engine/memory.hpp"

#ifndef SKIPGANOMALY_CUDA_MODULE_FILE
#error "SKIPGANOMALY_CUDA_MODULE_FILE (the module's file name) must be defined by the build"
#endif

namespace sga::detail {
namespace {

struct LoadResult {
    const CudaModule* module = nullptr;
    std::string error;
};

#if SKIPGANOMALY_WITH_CUDA
// Constant-initialised: usable from any static initialiser.
constexpr CudaHostServices host_services{.abi = cuda_module_abi,
                                         .version = SKIPGANOMALY_VERSION_STRING,
                                         .kernels_def_sha256 = SKIPGANOMALY_KERNELS_DEF_SHA256,
                                         .layout = cuda_module_layout(),
                                         .allocate = &sga::allocate,
                                         .deallocate = &sga::deallocate,
                                         .allocate_block = &sga::allocate_block,
                                         .deallocate_block = &sga::deallocate_block};

// The folder of the binary (shared library or program) this code was linked into.
std::string own_folder() {
    Dl_info info{};
    link_map* map = nullptr;
    std::string path;
    if (dladdr1(static_cast<const void*>(&host_services), &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) &&
        map && map->l_name && map->l_name[0] != '\0') {
        path = map->l_name;
    } else {  // the main program has an empty name in the link map
        std::vector<char> buffer(4096);
        const ssize_t n = readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
        if (n > 0) path.assign(buffer.data(), static_cast<std::size_t>(n));
    }
    const std::size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash);
}
#endif

LoadResult load() {
#if !SKIPGANOMALY_WITH_CUDA
    return {nullptr, "this build of skipganomaly has no CUDA backend"};
#else
    const std::string file = SKIPGANOMALY_CUDA_MODULE_FILE;
    std::vector<std::string> candidates;
    const char* forced = std::getenv("SKIPGANOMALY_CUDA_MODULE");
    const bool is_forced = forced && *forced;
    if (is_forced) {
        candidates.push_back(forced);
    } else {
        const std::string folder = own_folder();
        if (!folder.empty()) {
            for (const std::string& path : {folder + "/" + file, folder + "/../lib/" + file})
                if (access(path.c_str(), F_OK) == 0) candidates.push_back(path);
        }
        candidates.push_back(file);
    }
    std::string error;
    for (const std::string& candidate : candidates) {
        void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            const char* message = dlerror();
            error = message ? message : "dlopen failed";
            break;  // it exists (or is the last try): its error is the reason
        }
        auto entry = reinterpret_cast<CudaModuleEntry>(dlsym(handle, cuda_module_entry_name));
        const CudaModule* module = entry ? entry(&host_services) : nullptr;
        if (module && module->abi == cuda_module_abi && std::string(module->version) == SKIPGANOMALY_VERSION_STRING) {
            const std::string mismatch = cuda_module_mismatch("the module", module->kernels_def_sha256, module->layout);
            if (mismatch.empty()) return {module, {}};
            // Same version, another build: calling into it could pass structures that it lays
            // out differently, or a kernel with another signature.
            error = candidate + " comes from another build of skipganomaly " SKIPGANOMALY_VERSION_STRING " (" +
                    mismatch + "); install the module built with this library";
            dlclose(handle);
            break;
        }
        error = candidate + " is not the CUDA module of skipganomaly " SKIPGANOMALY_VERSION_STRING;
        dlclose(handle);
        break;
    }
    return {nullptr, "this build's CUDA module (" + file + ") could not be loaded: " + error +
                         (is_forced ? " (SKIPGANOMALY_CUDA_MODULE)" : "")};
#endif
}

const LoadResult& loaded() {
    static const LoadResult result = load();
    return result;
}

}  // namespace

const CudaModule* cuda_module() { return loaded().module; }
const std::string& cuda_module_error() { return loaded().error; }

const CudaModule& require_cuda_module(const char* what) {
    const CudaModule* module = cuda_module();
    if (!module) throw DeviceError(std::string(what) + ": " + cuda_module_error());
    return *module;
}

const CudaKernelTable& cuda_kernels() { return require_cuda_module("CUDA kernel").kernels; }

}  // namespace sga::detail
