// src/python/shm.cpp: the shared-objects part of troupe._core, under
// python/troupe/shm.py: heaps, conversion between Python values and
// shm::Value, container operations and transactions whose body is Python.
//
// Every operation here runs in a transaction: its own, or the one a Python
// function passed to atomically() runs in on this thread (tx.hpp: nested
// calls join). Python objects are built and read with the GIL held, which
// every function here keeps.
//
// Invariants:
//   PH1. A conflict met inside a Python transaction body unwinds through the
//       Python code as troupe.shm._Conflict (a BaseException, so `except
//       Exception` does not swallow it) and becomes TxConflict again at the
//       body's edge, where the C++ loop retries the body.
//   PH2. A transaction that waits for another (a lock, the irrevocable token)
//       releases the GIL while it yields (tx.hpp TxWaitHook): the one it waits
//       for may be another thread of this process that needs the GIL to
//       finish.
//   PH3. Handles (Dict, List, Record in Python) hold the HeapBox, so the heap
//       stays mapped while any handle lives; a handle whose container was
//       freed raises troupe.shm.StaleHandle (Errc::not_found), never another
//       container's data (objects.hpp V2).
#include <fmt/core.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <climits>
#include <cstring>
#include <memory>
#include <thread>

#include "troupe/shm/heap.hpp"
#include "troupe/shm/objects.hpp"
#include "troupe/shm/queue.hpp"
#include "troupe/shm/tx.hpp"

namespace nb = nanobind;

namespace troupe::py {

using shm::Kind;
using shm::Offset;
using shm::Tx;
using shm::Value;
using shm::null_offset;

namespace {

// One open heap, shared by its Python object and every handle into it (PH3).
struct HeapBox {
  shm::Heap heap;
  shm::TxHeap* txh = nullptr;
  explicit HeapBox(shm::Heap h) : heap(std::move(h)), txh(&shm::TxHeap::attach(heap)) {}
  ~HeapBox() {
    if (heap) {
      shm::TxHeap::detach(heap);
      heap.close();
    }
  }
};
using Box = std::shared_ptr<HeapBox>;

// Set by the package; leaked on purpose (a static nb::object would be
// released after the interpreter is gone).
nb::object& conflict_type = *new nb::object();  // troupe._errors._Conflict (PH1)
nb::object& factories = *new nb::object();      // (make_dict, make_list, make_record)

// pickle.dumps / pickle.loads, looked up once (leaked like the others).
nb::object& pickle_dumps() {
  static nb::object& f = *new nb::object(nb::module_::import_("pickle").attr("dumps"));
  return f;
}
nb::object& pickle_loads() {
  static nb::object& f = *new nb::object(nb::module_::import_("pickle").attr("loads"));
  return f;
}

// PH2
void yield_without_gil() {
  if (PyGILState_Check()) {
    Py_BEGIN_ALLOW_THREADS std::this_thread::yield();
    Py_END_ALLOW_THREADS
  } else {
    std::this_thread::yield();
  }
}

// Runs f(tx) as a transaction on this thread (joining the Python body's, if
// any); a TxConflict that escapes to Python code is PH1's _Conflict.
template <class F>
auto run(HeapBox& h, F&& f) {
  return shm::atomically(*h.txh, std::forward<F>(f));
}

// --------------------------------------------------------------- Python -> Value
struct Where {
  const char* what;  // "a dict value", "a key", ...
};

Value to_value(Tx& tx, const Box& box, nb::handle o, Where w, int depth = 0);

Value from_int(nb::handle o) {
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
  if (!overflow) return Value(v);
  // Outside int64: minimal two's-complement little-endian bytes.
  nb::object n = nb::borrow(o);
  std::size_t bits = nb::cast<std::size_t>(n.attr("bit_length")());
  std::size_t nbytes = bits / 8 + 1;
  nb::bytes b = nb::cast<nb::bytes>(n.attr("to_bytes")(nbytes, "little", nb::arg("signed") = true));
  return Value::bigint(std::string_view(b.c_str(), b.size()));
}

[[noreturn]] void cannot_store(nb::handle o, Where w) {
  std::string type = nb::cast<std::string>(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(o.ptr())))
                                               .attr("__qualname__"));
  throw nb::type_error(
      fmt::format("cannot store a {} in shared memory (as {}): shared objects hold None, bool, "
                  "int, float, str, bytes, tuple, dict, list, troupe.shm containers and Records",
                  type, w.what)
          .c_str());
}

// None, bool, int, float and str: their Value needs no transaction.
std::optional<Value> scalar_value(nb::handle o) {
  if (o.is_none()) return Value();
  if (PyBool_Check(o.ptr())) return Value(o.ptr() == Py_True);
  if (PyLong_CheckExact(o.ptr())) return from_int(o);
  if (PyFloat_CheckExact(o.ptr())) return Value(PyFloat_AS_DOUBLE(o.ptr()));
  if (PyUnicode_CheckExact(o.ptr())) {
    Py_ssize_t n;
    const char* s = PyUnicode_AsUTF8AndSize(o.ptr(), &n);
    if (!s) throw nb::python_error();
    return Value(std::string_view(s, static_cast<std::size_t>(n)));
  }
  return std::nullopt;
}

Value to_value(Tx& tx, const Box& box, nb::handle o, Where w, int depth) {
  if (depth > 200) throw nb::value_error("a value nested more than 200 deep (a cycle?)");
  if (auto v = scalar_value(o)) return std::move(*v);
  if (PyBytes_CheckExact(o.ptr()))
    return Value::bytes(std::string_view(PyBytes_AS_STRING(o.ptr()),
                                         static_cast<std::size_t>(PyBytes_GET_SIZE(o.ptr()))));
  if (PyTuple_CheckExact(o.ptr())) {
    std::vector<Value> items;
    for (nb::handle i : nb::borrow<nb::tuple>(o)) items.push_back(to_value(tx, box, i, w, depth + 1));
    return Value::tuple(std::move(items));
  }
  // A Record made in Python and not stored yet: it becomes a shared record.
  if (nb::hasattr(o, "_troupe_new_record")) {
    nb::tuple spec = nb::cast<nb::tuple>(o.attr("_troupe_new_record")());
    if (!spec[0].is_none()) {
      std::vector<std::string> fields = nb::cast<std::vector<std::string>>(spec[0]);
      shm::Record r = shm::new_record(tx, fields);
      for (auto [k, v] : nb::cast<nb::dict>(spec[1]))
        r.set(tx, nb::cast<std::string>(k), to_value(tx, box, v, {"a record field"}, depth + 1));
      return Value(r);
    }
  }
  // A troupe.shm handle: (box, kind, offset, stamp) in its _troupe_ref.
  if (nb::hasattr(o, "_troupe_ref")) {
    nb::tuple ref = nb::cast<nb::tuple>(o.attr("_troupe_ref"));
    Box other = nb::cast<Box>(ref[0]);
    if (other.get() != box.get() && other->heap.name() != box->heap.name())
      throw nb::value_error("a container of another heap cannot be stored here (copy it: "
                            "to_python())");
    return Value::ref(static_cast<Kind>(nb::cast<int>(ref[1])), nb::cast<Offset>(ref[2]),
                      nb::cast<std::uint64_t>(ref[3]));
  }
  if (PyDict_Check(o.ptr())) {  // a plain dict becomes a shared Dict, recursively
    nb::dict d = nb::borrow<nb::dict>(o);
    shm::Dict sd = shm::new_dict(tx, std::max<std::size_t>(16, d.size()));
    for (auto [k, v] : d)
      sd.set(tx, to_value(tx, box, k, {"a dict key"}, depth + 1),
             to_value(tx, box, v, {"a dict value"}, depth + 1));
    return Value(sd);
  }
  if (PyList_Check(o.ptr())) {
    nb::list l = nb::borrow<nb::list>(o);
    shm::List sl = shm::new_list(tx, std::max<std::size_t>(4, l.size()));
    for (nb::handle v : l) sl.append(tx, to_value(tx, box, v, {"a list item"}, depth + 1));
    return Value(sl);
  }
  cannot_store(o, w);
}

// --------------------------------------------------------------- Value -> Python
nb::object handle_of(const Box& box, Kind k, Offset off, std::uint64_t stamp) {
  int which = k == Kind::dict ? 0 : k == Kind::list ? 1 : 2;
  return factories[which](box, static_cast<int>(k), off, stamp);
}

nb::object from_value(const Box& box, const Value& v) {
  switch (v.kind()) {
    case Kind::none:
      return nb::none();
    case Kind::boolean:
      return nb::bool_(v.as_bool());
    case Kind::integer:
      return nb::int_(v.as_int());
    case Kind::real:
      return nb::float_(v.as_double());
    case Kind::string:
      return nb::str(v.as_string().data(), v.as_string().size());
    case Kind::bytes:
      return nb::bytes(v.as_bytes().data(), v.as_bytes().size());
    case Kind::bigint: {
      const std::string& b = v.as_bigint();
      return nb::module_::import_("builtins")
          .attr("int")
          .attr("from_bytes")(nb::bytes(b.data(), b.size()), "little", nb::arg("signed") = true);
    }
    case Kind::tuple: {
      nb::list items;
      for (const Value& i : v.as_tuple()) items.append(from_value(box, i));
      return nb::tuple(items);
    }
    case Kind::list:
    case Kind::dict:
    case Kind::record:
      return handle_of(box, v.kind(), v.ref(), v.stamp());
  }
  throw Error(Errc::bad_segment, "a value of unknown kind");
}

Value key_of(Tx& tx, const Box& box, nb::handle k) {
  Value v = to_value(tx, box, k, {"a key"});
  if (!v.hashable())
    throw nb::type_error(fmt::format("unhashable key for a shared dict: {}", v.repr()).c_str());
  return v;
}

// --------------------------------------------------------------- containers
shm::Dict dict_of(Offset off, std::uint64_t stamp) { return shm::Dict(off, stamp); }
shm::List list_of(Offset off, std::uint64_t stamp) { return shm::List(off, stamp); }
shm::Record record_of(Offset off, std::uint64_t stamp) { return shm::Record(off, stamp); }

std::size_t index_of(Tx& tx, shm::List l, long long i) {
  long long n = static_cast<long long>(l.size(tx));
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw nb::index_error("shared list index out of range");
  return static_cast<std::size_t>(i);
}

// A block of the heap exposed through the buffer protocol (memoryview,
// numpy.frombuffer) without a copy. The Python object holds the HeapBox, so
// the mapping outlives every view (PH3). The block is freed when the owner
// (the object heap.buffer() returned in the allocating process) is
// collected: every memoryview or numpy array made from it references it, so
// none can outlive the block. Copies unpickled in other processes never free.
// A queue's in-place get (queue.hpp Q5) makes a read-only one that owns the
// item's blob (`block`; its bytes start at `off`).
struct SharedBuffer {
  Box box;
  Offset off = null_offset;
  Offset block = null_offset;  // what the owner frees (off's block, or the blob off is in)
  std::size_t size = 0;
  bool owner = false;
  bool readonly = false;
  SharedBuffer() = default;
  SharedBuffer(SharedBuffer&& o) noexcept
      : box(std::move(o.box)),
        off(std::exchange(o.off, null_offset)),
        block(std::exchange(o.block, null_offset)),
        size(o.size),
        owner(o.owner),
        readonly(o.readonly) {}
  SharedBuffer(const SharedBuffer&) = delete;
  ~SharedBuffer() {
    if (owner && block && box && box->heap) {
      try {
        box->heap.free(block);
      } catch (const std::exception&) {  // the heap is going away: nothing to give back to
      }
    }
  }
};

int buffer_get(PyObject* self, Py_buffer* view, int flags) {
  SharedBuffer* b = nb::inst_ptr<SharedBuffer>(self);
  return PyBuffer_FillInfo(view, self, b->box->heap.ptr(b->off), static_cast<Py_ssize_t>(b->size),
                           b->readonly ? 1 : 0, flags);
}
PyType_Slot buffer_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(buffer_get)},
                              {0, nullptr}};

// A queue item as the package stored it (put_item): a 1-tuple of bytes is a
// pickle, anything else a value.
nb::object queue_item(const Box& box, const Value& v) {
  if (v.kind() == Kind::tuple && v.as_tuple().size() == 1 && v.as_tuple()[0].kind() == Kind::bytes) {
    std::string_view b = v.as_tuple()[0].as_bytes();
    return pickle_loads()(nb::bytes(b.data(), b.size()));
  }
  return from_value(box, v);
}

}  // namespace

void bind_shm(nb::module_& m) {
  shm::detail::set_tx_wait_hook(&yield_without_gil);  // PH2

  nb::class_<HeapBox>(m, "HeapBox", nb::is_weak_referenceable())
      .def_prop_ro("name", [](HeapBox& h) { return h.heap.name(); })
      .def("live_bytes", [](HeapBox& h) { return h.heap.stats().live_bytes(); })
      .def("used_bytes",  // what shared objects hold: published, less the TxHeap's own
           [](HeapBox& h) { return h.heap.stats().published - h.txh->tx_heap_bytes(); })
      .def("committed_bytes", [](HeapBox& h) { return h.heap.committed_bytes(); })
      .def("max_size", [](HeapBox& h) { return h.heap.max_size(); })
      .def("verify", [](HeapBox& h) { return h.heap.verify(); })
      .def("stuck_locks", [](HeapBox& h) { return h.txh->stuck_locks(); })
      .def("recover",
           [](HeapBox& h) {
             // With the GIL held: close() from another thread must not
             // unmap the heap under it (recovery is short).
             std::size_t n = h.heap.recover().slots.size();
             h.txh->recover_orphans();
             return n;
           })
      .def("set_keep", [](HeapBox& h, bool keep) { h.heap.set_keep(keep); })
      .def("close", [](HeapBox& h) {
        if (h.heap) {
          shm::TxHeap::detach(h.heap);
          h.heap.close();
        }
      });

  m.def("shm_setup", [](nb::handle conflict, nb::tuple f) {
    conflict_type = nb::borrow(conflict);  // also given to set_error_types (core.cpp)
    factories = nb::borrow(f);
  });
  m.def("shm_create", [](std::string name, std::size_t size, std::size_t initial) -> Box {
    shm::CreateOptions o;
    o.name = std::move(name);
    o.max_size = size;
    o.initial_size = std::min(initial, size);
    return std::make_shared<HeapBox>(shm::Heap::create(o));
  });
  m.def("shm_open", [](std::string name) -> Box {
    return std::make_shared<HeapBox>(shm::Heap::open(name));
  });
  m.def("shm_remove", [](std::string name) { shm::Heap::remove(name); });

  // PH1: runs fn() as one transaction, again on conflict.
  m.def("shm_atomically", [](Box box, nb::callable fn) -> nb::object {
    return run(*box, [&](Tx&) -> nb::object {
      try {
        return fn();
      } catch (nb::python_error& e) {
        if (e.matches(conflict_type)) throw shm::TxConflict{};  // PH1: the loop retries
        throw;
      }
    });
  });
  m.def("shm_in_transaction", [] { return shm::detail::current_tx() != nullptr; });

  // ---- roots
  m.def("shm_root", [](Box box, std::string name, int kind) -> nb::object {
    return run(*box, [&](Tx& tx) -> nb::object {
      Value v = shm::get_root(tx, name);
      if (v.is_none()) {
        if (kind == static_cast<int>(Kind::dict))
          v = Value(shm::new_dict(tx));
        else if (kind == static_cast<int>(Kind::list))
          v = Value(shm::new_list(tx));
        else
          return nb::none();
        shm::set_root(tx, name, v);
        v = shm::get_root(tx, name);
      }
      return from_value(box, v);
    });
  });
  m.def("shm_set_root", [](Box box, std::string name, nb::handle value) {
    run(*box, [&](Tx& tx) { shm::set_root(tx, name, to_value(tx, box, value, {"a root"})); });
  }, nb::arg("box"), nb::arg("name"), nb::arg("value").none());

  // ---- dict
  m.def("dict_len", [](Box box, Offset off, std::uint64_t st) {
    return run(*box, [&](Tx& tx) { return dict_of(off, st).size(tx); });
  });
  m.def("dict_get", [](Box box, Offset off, std::uint64_t st, nb::handle key) -> nb::object {
    return run(*box, [&](Tx& tx) -> nb::object {
      auto v = dict_of(off, st).get(tx, key_of(tx, box, key));
      if (!v) throw nb::key_error(nb::repr(key).c_str());
      return from_value(box, *v);
    });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("key").none());
  m.def("dict_get_or", [](Box box, Offset off, std::uint64_t st, nb::handle key,
                          nb::handle otherwise) -> nb::object {
    return run(*box, [&](Tx& tx) -> nb::object {
      auto v = dict_of(off, st).get(tx, key_of(tx, box, key));
      return v ? from_value(box, *v) : nb::borrow(otherwise);
    });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("key").none(), nb::arg("otherwise").none());
  m.def("dict_set", [](Box box, Offset off, std::uint64_t st, nb::handle key, nb::handle value) {
    run(*box, [&](Tx& tx) {
      dict_of(off, st).set(tx, key_of(tx, box, key), to_value(tx, box, value, {"a dict value"}));
    });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("key").none(), nb::arg("value").none());
  m.def("dict_del", [](Box box, Offset off, std::uint64_t st, nb::handle key) {
    return run(*box, [&](Tx& tx) { return dict_of(off, st).erase(tx, key_of(tx, box, key)); });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("key").none());
  m.def("dict_contains", [](Box box, Offset off, std::uint64_t st, nb::handle key) {
    return run(*box, [&](Tx& tx) {
      Value k = to_value(tx, box, key, {"a key"});
      return k.hashable() && dict_of(off, st).contains(tx, k);
    });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("key").none());
  m.def("dict_keys", [](Box box, Offset off, std::uint64_t st) -> nb::list {
    return run(*box, [&](Tx& tx) {
      nb::list out;
      for (const Value& k : dict_of(off, st).keys(tx)) out.append(from_value(box, k));
      return out;
    });
  });
  m.def("dict_items", [](Box box, Offset off, std::uint64_t st) -> nb::list {
    return run(*box, [&](Tx& tx) {
      nb::list out;
      dict_of(off, st).for_each(tx, [&](const Value& k, const Value& v) {
        out.append(nb::make_tuple(from_value(box, k), from_value(box, v)));
      });
      return out;
    });
  });
  m.def("dict_add", [](Box box, Offset off, std::uint64_t st, nb::handle key, long long delta) {
    // Outside a transaction a scalar key takes Dict::increment's single
    // atomic operation (no transaction's logs); else add() in one.
    if (!shm::detail::current_tx())
      if (auto k = scalar_value(key); k && k->hashable())
        return dict_of(off, st).increment(*box->txh, *k, delta);
    return run(*box, [&](Tx& tx) { return dict_of(off, st).add(tx, key_of(tx, box, key), delta); });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("key").none(), nb::arg("delta"));

  // ---- list
  m.def("list_len", [](Box box, Offset off, std::uint64_t st) {
    return run(*box, [&](Tx& tx) { return list_of(off, st).size(tx); });
  });
  m.def("list_get", [](Box box, Offset off, std::uint64_t st, long long i) -> nb::object {
    return run(*box, [&](Tx& tx) -> nb::object {
      shm::List l = list_of(off, st);
      return from_value(box, l.get(tx, index_of(tx, l, i)));
    });
  });
  m.def("list_set", [](Box box, Offset off, std::uint64_t st, long long i, nb::handle value) {
    run(*box, [&](Tx& tx) {
      shm::List l = list_of(off, st);
      l.set(tx, index_of(tx, l, i), to_value(tx, box, value, {"a list item"}));
    });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("i"), nb::arg("value").none());
  m.def("list_append", [](Box box, Offset off, std::uint64_t st, nb::handle value) {
    run(*box, [&](Tx& tx) { list_of(off, st).append(tx, to_value(tx, box, value, {"a list item"})); });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("value").none());
  m.def("list_pop", [](Box box, Offset off, std::uint64_t st) -> nb::object {
    return run(*box, [&](Tx& tx) -> nb::object {
      shm::List l = list_of(off, st);
      if (l.size(tx) == 0) throw nb::index_error("pop from an empty shared list");
      return from_value(box, l.pop(tx));
    });
  });
  m.def("list_clear", [](Box box, Offset off, std::uint64_t st) {
    run(*box, [&](Tx& tx) { list_of(off, st).clear(tx); });
  });
  m.def("list_items", [](Box box, Offset off, std::uint64_t st) -> nb::list {
    return run(*box, [&](Tx& tx) {
      nb::list out;
      for (const Value& v : list_of(off, st).items(tx)) out.append(from_value(box, v));
      return out;
    });
  });

  // ---- records
  m.def("record_new", [](Box box, std::vector<std::string> fields, nb::dict values) -> nb::object {
    return run(*box, [&](Tx& tx) -> nb::object {
      shm::Record r = shm::new_record(tx, fields);
      for (auto [k, v] : values)
        r.set(tx, nb::cast<std::string>(k), to_value(tx, box, v, {"a record field"}));
      return handle_of(box, Kind::record, r.offset(), r.stamp());
    });
  });
  m.def("record_get", [](Box box, Offset off, std::uint64_t st, std::string field) -> nb::object {
    return run(*box, [&](Tx& tx) { return from_value(box, record_of(off, st).get(tx, field)); });
  });
  m.def("record_set", [](Box box, Offset off, std::uint64_t st, std::string field, nb::handle v) {
    run(*box, [&](Tx& tx) { record_of(off, st).set(tx, field, to_value(tx, box, v, {"a record field"})); });
  }, nb::arg("box"), nb::arg("off"), nb::arg("st"), nb::arg("field"), nb::arg("v").none());
  m.def("record_fields", [](Box box, Offset off, std::uint64_t st) {
    return run(*box, [&](Tx& tx) { return record_of(off, st).fields(tx); });
  });

  // ---- zero-copy buffers
  nb::class_<SharedBuffer>(m, "SharedBuffer", nb::type_slots(buffer_slots))
      .def_ro("offset", &SharedBuffer::off)
      .def_ro("nbytes", &SharedBuffer::size)
      .def_prop_ro("heap_name", [](SharedBuffer& b) { return b.box->heap.name(); });
  m.def("buffer_new", [](Box box, std::size_t nbytes) {
    if (nbytes == 0) throw nb::value_error("a shared buffer needs at least one byte");
    SharedBuffer b;
    b.box = box;
    b.off = b.block = box->heap.allocate(nbytes);
    box->heap.publish(b.off);  // shared data now: survives this process's death
    std::memset(box->heap.ptr(b.off), 0, nbytes);
    b.size = nbytes;
    b.owner = true;
    return b;
  });
  m.def("buffer_view", [](Box box, Offset off, std::size_t nbytes) {  // another process's buffer
    if (off == null_offset || nbytes == 0 || off + nbytes > box->heap.max_size())
      throw nb::value_error("not a buffer of this heap");
    (void)box->heap.ptr(off + nbytes - 1);  // throws if past what the heap has committed
    SharedBuffer b;
    b.box = box;
    b.off = off;
    b.size = nbytes;
    return b;
  });

  // ---- queues (items are bytes: the package pickles)
  struct PyQueue {
    Box box;
    shm::Queue q;
  };
  nb::class_<PyQueue>(m, "ShmQueue")
      .def_prop_ro("capacity", [](PyQueue& q) { return q.q.capacity(); })
      .def("try_put",
           [](PyQueue& q, nb::bytes b) {
             return q.q.try_put(Value::bytes(std::string_view(b.c_str(), b.size())));
           })
      // Items as the package stores them: int (int64), float, str and bool in
      // place; bytes and memoryviews as bytes (one copy, into the heap);
      // anything else pickled (protocol 5) into a 1-tuple of bytes.
      .def("put_item",
           [](PyQueue& q, nb::handle o) {
             PyObject* p = o.ptr();
             if (PyLong_CheckExact(p)) {
               int overflow = 0;
               long long v = PyLong_AsLongLongAndOverflow(p, &overflow);
               if (!overflow) return q.q.try_put(Value(v));
             } else if (PyFloat_CheckExact(p)) {
               return q.q.try_put(Value(PyFloat_AS_DOUBLE(p)));
             } else if (PyUnicode_CheckExact(p)) {
               Py_ssize_t n;
               if (const char* s = PyUnicode_AsUTF8AndSize(p, &n))
                 return q.q.try_put(Value(std::string_view(s, static_cast<std::size_t>(n))));
               PyErr_Clear();  // not encodable as UTF-8 (lone surrogates): pickle it
             } else if (PyBool_Check(p)) {
               return q.q.try_put(Value(p == Py_True));
             } else if (PyBytes_CheckExact(p)) {
               return q.q.try_put(Value::bytes_ref(
                   std::string_view(PyBytes_AS_STRING(p), static_cast<std::size_t>(PyBytes_GET_SIZE(p)))));
             } else if (PyMemoryView_Check(p)) {
               Py_buffer view;
               if (PyObject_GetBuffer(p, &view, PyBUF_C_CONTIGUOUS) != 0) throw nb::python_error();
               struct Release {
                 Py_buffer* v;
                 ~Release() { PyBuffer_Release(v); }
               } release{&view};
               return q.q.try_put(Value::bytes_ref(
                   std::string_view(static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len))));
             }
             nb::bytes b = nb::cast<nb::bytes>(pickle_dumps()(o, 5));
             return q.q.try_put(
                 Value::tuple({Value::bytes_ref(std::string_view(b.c_str(), b.size()))}));
           }, nb::arg("item").none())
      .def("get_item",  // (True, item) or (False, None) when empty
           [](PyQueue& q) -> nb::tuple {
             auto v = q.q.try_get();
             if (!v) return nb::make_tuple(false, nb::none());
             return nb::make_tuple(true, queue_item(q.box, *v));
           })
      .def("get_view",  // as get_item, a bytes item as a read-only view in place (Q5)
           [](PyQueue& q) -> nb::tuple {
             auto v = q.q.try_get_in_place();
             if (!v) return nb::make_tuple(false, nb::none());
             if (!v->block) return nb::make_tuple(true, queue_item(q.box, v->value));
             SharedBuffer b;
             b.box = q.box;
             b.block = v->block;
             b.off = q.box->heap.offset_of(v->bytes.data());
             b.size = v->bytes.size();
             b.owner = true;
             b.readonly = true;
             nb::object owner = nb::cast(std::move(b));
             PyObject* view = PyMemoryView_FromObject(owner.ptr());
             if (!view) throw nb::python_error();
             return nb::make_tuple(true, nb::steal(view));
           })
      .def("try_get",
           [](PyQueue& q) -> nb::object {
             auto v = q.q.try_get();
             if (!v) return nb::none();
             std::string_view b = v->as_bytes();
             return nb::bytes(b.data(), b.size());
           })
      .def("wait",  // one bounded wait, GIL released (queue.hpp Q3)
           [](PyQueue& q, bool for_put, double seconds) {
             nb::gil_scoped_release nogil;
             q.q.wait(for_put, std::chrono::nanoseconds(static_cast<long long>(seconds * 1e9)));
           })
      .def("size", [](PyQueue& q) { return q.q.size(); })
      .def("close", [](PyQueue& q) { q.q.close(); })
      .def("closed", [](PyQueue& q) { return q.q.closed(); });
  m.def("queue_create", [](Box box, std::string name, std::size_t capacity) {
    return PyQueue{box, shm::Queue::create(box->heap, name, capacity)};
  });
  m.def("queue_open", [](Box box, std::string name) {
    return PyQueue{box, shm::Queue::open(box->heap, name)};
  });

  m.attr("KIND_DICT") = static_cast<int>(Kind::dict);
  m.attr("KIND_LIST") = static_cast<int>(Kind::list);
  m.attr("KIND_RECORD") = static_cast<int>(Kind::record);
}

}  // namespace troupe::py
