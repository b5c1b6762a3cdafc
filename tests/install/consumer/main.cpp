// Uses the installed headers and library: one multi-actor transfer.
#include <troupe/troupe.hpp>

#include <cstdio>

struct Account {
  long balance = 0;
};

int main() {
  auto a = troupe::make_actor<Account>(Account{10});
  auto b = troupe::make_actor<Account>();
  long moved = troupe::when(a, b, [](Account& x, Account& y) {
                 x.balance -= 4;
                 y.balance += 4;
                 return y.balance;
               }).get();
  std::printf(moved == 4 ? "consumer ok\n" : "consumer wrong\n");
  return moved == 4 ? 0 : 1;
}
