// Uses the installed headers and libraries of every layer: a multi-actor
// transfer (troupe::core), a shared dict changed in a transaction and a queue
// (troupe::shm), and an executor that runs a call in a worker process
// (troupe::exec over troupe::proc). Every header it includes is public; the
// install test also checks that no private header was installed.
#include <troupe/exec/executor.hpp>
#include <troupe/shm/objects.hpp>
#include <troupe/shm/queue.hpp>
#include <troupe/troupe.hpp>

#include <cstdio>

struct Account {
  long balance = 0;
};

int twice(int x) { return 2 * x; }

int main(int argc, char** argv) {
  troupe::proc::init(argc, argv);  // a worker started from this binary serves here
  auto a = troupe::make_actor<Account>(Account{10});
  auto b = troupe::make_actor<Account>();
  long moved = troupe::when(a, b, [](Account& x, Account& y) {
                 x.balance -= 4;
                 y.balance += 4;
                 return y.balance;
               }).get();

  namespace shm = troupe::shm;
  shm::Heap heap = shm::Heap::create();
  shm::TxHeap& txh = shm::TxHeap::attach(heap);
  shm::Dict d = shm::root_dict(txh, "d", 16);
  shm::atomically(txh, [&](shm::Tx& tx) { d.add(tx, shm::Value("k"), 5); });
  auto q = shm::Queue::create(heap, "q", 4);
  q.try_put(shm::Value(7));
  long from_shm = shm::atomically(txh, [&](shm::Tx& tx) { return d.get_int(tx, shm::Value("k")); }) +
                  q.try_get()->as_int();

  troupe::exec::Executor ex;
  int remote = ex.submit(troupe::exec::isolated<&twice>, 21).get();

  bool ok = moved == 4 && from_shm == 12 && remote == 42;
  std::printf(ok ? "consumer ok\n" : "consumer wrong: %ld %ld %d\n", moved, from_shm, remote);
  shm::TxHeap::detach(heap);
  return ok ? 0 : 1;
}
