// The commands of the skipganomaly tool. Each takes the arguments after its name, prints its
// help for -h/--help, returns the exit code (0) and throws UsageError for a mistake on the
// command line and sga::Error (or another std::exception) for a failure.
#pragma once

#include <string>
#include <vector>

namespace cli {

int command_demo(const std::vector<std::string>& args);       // command_demo.cpp
int command_fit(const std::vector<std::string>& args);        // command_fit.cpp
int command_score(const std::vector<std::string>& args);      // command_score.cpp
int command_eval(const std::vector<std::string>& args);       // command_eval.cpp
int command_calibrate(const std::vector<std::string>& args);  // command_calibrate.cpp
int command_serve(const std::vector<std::string>& args);      // command_serve.cpp

}  // namespace cli
