// The files and folders the tool writes: checked before the work that produces them, so that
// a missing folder or a read-only target fails in a second rather than after a training run.
#pragma once

#include <string>

namespace cli {

// `path` can be written (safe_file::check_writable): its folder exists and is writable, and
// it is not a folder nor a file this user may not write. sga::IoError naming `option` else.
void check_output_file(const std::string& option, const std::string& path);

// Folder `dir` exists and is writable, or can be created: its nearest existing ancestor is a
// writable folder. Creates nothing. sga::IoError naming `option` else.
void check_output_folder(const std::string& option, const std::string& dir);

// Where a cancelled fit saves its partial model instead of replacing an existing `out`:
// NAME.partial.EXT beside it (model.safetensors -> model.partial.safetensors).
std::string partial_model_path(const std::string& out);

}  // namespace cli
