// src/proc/shared_bytes.cpp: memfd-backed byte buffers (fd.hpp).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "troupe/error.hpp"
#include "troupe/proc/fd.hpp"

namespace troupe::proc {

namespace {
std::byte* map_fd(int fd, std::size_t size) {
  if (size == 0) return nullptr;
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw errno_error(Errc::system, errno, fmt::format("mmap of {} bytes", size));
  return static_cast<std::byte*>(p);
}
}  // namespace

SharedBytes::SharedBytes(std::size_t size) : fd_(::memfd_create("troupe-bytes", MFD_CLOEXEC)), size_(size) {
  if (!fd_) throw errno_error(Errc::system, errno, "memfd_create");
  int rc = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(size));
  if (rc != 0)
    throw errno_error(Errc::out_of_memory, rc, fmt::format("reserving {} shared bytes", size));
  data_ = map_fd(fd_.get(), size);
}

SharedBytes SharedBytes::map(Fd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(Errc::bad_message, "bad message: a SharedBytes descriptor is not a memory file");
  SharedBytes b;
  b.size_ = static_cast<std::size_t>(st.st_size);
  b.data_ = map_fd(fd.get(), b.size_);
  b.fd_ = std::move(fd);
  return b;
}

SharedBytes& SharedBytes::operator=(SharedBytes&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(data_, size_);
    fd_ = std::move(o.fd_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

SharedBytes::~SharedBytes() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace troupe::proc
