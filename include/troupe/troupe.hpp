// troupe/troupe.hpp: the umbrella header. Include this, or the parts:
//   troupe/actor.hpp    Actor<T>, make_actor, activate, read
//   troupe/when.hpp     when(...), the Whenable protocol
//   troupe/promise.hpp  Promise<T>, Resolver<T>, when_all, when_any
//   troupe/sync.hpp     only_if, notify, after, SyncObject
//   troupe/runtime.hpp  init, wait_idle, shutdown
//   troupe/sched/*.hpp  Scheduler, Pool, ManualScheduler, LoopScheduler, TaskGroup
#pragma once

#include "troupe/actor.hpp"
#include "troupe/backpressure.hpp"
#include "troupe/error.hpp"
#include "troupe/promise.hpp"
#include "troupe/runtime.hpp"
#include "troupe/sched/loop.hpp"
#include "troupe/sched/manual.hpp"
#include "troupe/sched/pool.hpp"
#include "troupe/sched/scheduler.hpp"
#include "troupe/sched/task_group.hpp"
#include "troupe/sync.hpp"
#include "troupe/when.hpp"
