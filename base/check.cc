#include "base/check.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace tritmoe {

ProcessIdentity& GetProcessIdentity() {
  static ProcessIdentity identity;
  return identity;
}

void SetProcessIdentity(int rank) {
  ProcessIdentity& id = GetProcessIdentity();
  id.rank = rank;
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) == 0) id.host = host;
}

FatalMessage::FatalMessage(const char* file, int line, const char* what) {
  const ProcessIdentity& id = GetProcessIdentity();
  stream_ << "[rank " << id.rank << " on " << (id.host.empty() ? "?" : id.host) << "] " << file
          << ":" << line << ": " << what << " ";
}

FatalMessage::~FatalMessage() {
  std::string msg = stream_.str();
  std::fprintf(stderr, "%s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace tritmoe
