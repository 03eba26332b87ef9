;; A cronwerk task written by hand in the WebAssembly text format.
;;
;; It implements the `scheduled-task` world of wit/0.1.0/task.wit
;; (package cronwerk:task@0.1.0, which the host still links beside the
;; current version) without any toolchain: no Rust, no wit-bindgen, no
;; WASI. Run it with
;;
;;     cronwerk inspect example-tasks/wat-hello/task.wat
;;     cronwerk exec    example-tasks/wat-hello/task.wat
;;
;; Layout of this file, in the order the component model requires:
;;   1. imports: the type-only `types` interface and the `log` interface
;;   2. core module $Memory: the linear memory and a bump `realloc`
;;   3. `canon lower` of log.write (it needs the memory, hence after 2)
;;   4. core module $Task: describe / execute, static strings in data segments
;;   5. `canon lift` of describe / execute, bundled into the exported
;;      `cronwerk:task/task@0.1.0` instance
;;
;; Memory map (one 64 KiB page to start with):
;;      0 ..  255   unused (address 0 stays "null")
;;    256 ..  299   describe's return area: a task-info record (44 bytes)
;;    320 ..  331   execute's return area: a result<string, string> (12 bytes)
;;   1024 .. 1198   static UTF-8 strings (data segments in $Task)
;;   4096 ..        heap handed out by `realloc` (the host copies execute's
;;                  arguments there); it only grows, nothing is ever freed,
;;                  which is fine because every run gets a fresh instance.
(component
  ;; ---------------------------------------------------------------------
  ;; 1. Imports
  ;; ---------------------------------------------------------------------

  ;; The shared types, imported the way wit-component does it: an instance
  ;; that exports only type definitions. Types used by other types (and by
  ;; functions) must be referred to through their *exported* names.
  (import "cronwerk:task/types@0.1.0" (instance $types
    (type $datetime' (record
      (field "seconds" s64)
      (field "nanoseconds" u32)))
    (export "datetime" (type $datetime (eq $datetime')))

    (type $trigger' (enum "schedule" "manual" "broadcast" "retry"))
    (export "trigger" (type $trigger (eq $trigger')))

    (type $task-info' (record
      (field "identifier" string)
      (field "display-name" string)
      (field "description" string)
      (field "version" string)
      (field "default-schedule" (option string))))
    (export "task-info" (type (eq $task-info')))

    (type $run-context' (record
      (field "configuration-name" string)
      (field "identifier" string)
      (field "run-id" string)
      (field "trigger" $trigger)
      (field "scheduled-for" (option $datetime))
      (field "last-run" (option $datetime))
      (field "next-run" (option $datetime))
      (field "run-count" u64)
      (field "instance-name" string)
      (field "properties" (list (tuple string string)))))
    (export "run-context" (type (eq $run-context')))

    (type $payload' (record
      (field "target" string)
      (field "text" string)
      (field "data" (list u8))))
    (export "payload" (type (eq $payload')))
  ))
  (alias export $types "task-info" (type $task-info))
  (alias export $types "run-context" (type $run-context))
  (alias export $types "payload" (type $payload))

  ;; The structured log: `write: func(level, event-code, message)`.
  (import "cronwerk:task/log@0.1.0" (instance $log
    (type $level' (enum "trace" "debug" "info" "warning" "error"))
    (export "level" (type $level (eq $level')))
    (type $write' (func
      (param "level" $level)
      (param "event-code" string)
      (param "message" string)))
    (export "write" (func (type $write')))
  ))
  (alias export $log "write" (func $log-write))

  ;; ---------------------------------------------------------------------
  ;; 2. The memory and the allocator, in a module of their own so that the
  ;;    memory exists before log.write is lowered (lowering needs it, and
  ;;    $Task needs the lowered function as an import).
  ;; ---------------------------------------------------------------------
  (core module $Memory
    (memory (export "memory") 1)

    ;; Next free byte of the heap.
    (global $heap (mut i32) (i32.const 4096))

    ;; cabi_realloc(old_ptr, old_size, align, new_size) -> ptr
    ;; A bump allocator: rounds the heap pointer up to `align`, hands out
    ;; `new_size` bytes, grows the memory when needed and copies the old
    ;; contents on a reallocation. Traps when memory cannot grow.
    (func (export "realloc")
      (param $old_ptr i32) (param $old_size i32)
      (param $align i32) (param $new_size i32)
      (result i32)
      (local $ptr i32) (local $end i32) (local $pages i32)
      ;; ptr = (heap + align - 1) & -align
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $new_size)))
      ;; refuse sizes that would wrap around the 32-bit address space
      (if (i32.or
            (i32.lt_u (local.get $end) (local.get $ptr))
            (i32.gt_u (local.get $end) (i32.const 0xFFFF0000)))
        (then unreachable))
      ;; pages = ceil(end / 64 KiB); grow by the difference if needed
      (local.set $pages
        (i32.shr_u (i32.add (local.get $end) (i32.const 0xFFFF)) (i32.const 16)))
      (if (i32.gt_u (local.get $pages) (memory.size))
        (then
          (if (i32.eq
                (memory.grow (i32.sub (local.get $pages) (memory.size)))
                (i32.const -1))
            (then unreachable))))
      (global.set $heap (local.get $end))
      ;; a reallocation keeps the old bytes (never the case for this task's
      ;; callers, who only allocate fresh blocks with old_ptr = 0)
      (if (local.get $old_size)
        (then
          (memory.copy (local.get $ptr) (local.get $old_ptr) (local.get $old_size))))
      (local.get $ptr))
  )
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "memory" (core memory $mem))
  (alias core export $memory "realloc" (core func $realloc))

  ;; ---------------------------------------------------------------------
  ;; 3. log.write as a core function. Its flattened parameters are
  ;;    (level: i32, event-code ptr: i32, len: i32, message ptr: i32, len: i32)
  ;;    and it returns nothing. The enum `level` is its case index:
  ;;    trace=0, debug=1, info=2, warning=3, error=4.
  ;; ---------------------------------------------------------------------
  (core func $write-lowered
    (canon lower (func $log-write) (memory $mem) string-encoding=utf8))

  ;; ---------------------------------------------------------------------
  ;; 4. The task itself.
  ;; ---------------------------------------------------------------------
  (core module $Task
    (import "env" "memory" (memory 1))
    (import "log" "write" (func $write (param i32 i32 i32 i32 i32)))

    ;; Static strings (UTF-8, not NUL-terminated; lengths in the comments).
    (data (i32.const 1024) "Acme.WatHello")                ;; 13 bytes
    (data (i32.const 1040) "Hello in WebAssembly text")    ;; 25 bytes
    (data (i32.const 1072)
      "A task written directly in the WebAssembly text format") ;; 54 bytes
    (data (i32.const 1136) "1.0.0")                        ;;  5 bytes
    (data (i32.const 1144) "WAT")                          ;;  3 bytes
    (data (i32.const 1152) "Hello from WebAssembly text!") ;; 28 bytes
    (data (i32.const 1184) "written by hand")              ;; 15 bytes

    ;; describe: func() -> task-info
    ;;
    ;; task-info flattens to 4 strings (2 x i32 each) + option<string>
    ;; (i32 discriminant + 2 x i32) = 11 core values, more than
    ;; MAX_FLAT_RESULTS = 1, so the core function returns a pointer to the
    ;; record in memory. Canonical-ABI layout of task-info (align 4,
    ;; size 44), here at address 256:
    ;;   +0  identifier.ptr        +4  identifier.len
    ;;   +8  display-name.ptr      +12 display-name.len
    ;;   +16 description.ptr       +20 description.len
    ;;   +24 version.ptr           +28 version.len
    ;;   +32 default-schedule discriminant (u8: 0 = none, 1 = some)
    ;;   +36 default-schedule.ptr  +40 default-schedule.len (unused for none)
    (func (export "describe") (result i32)
      (i32.store offset=0  (i32.const 256) (i32.const 1024))
      (i32.store offset=4  (i32.const 256) (i32.const 13))
      (i32.store offset=8  (i32.const 256) (i32.const 1040))
      (i32.store offset=12 (i32.const 256) (i32.const 25))
      (i32.store offset=16 (i32.const 256) (i32.const 1072))
      (i32.store offset=20 (i32.const 256) (i32.const 54))
      (i32.store offset=24 (i32.const 256) (i32.const 1136))
      (i32.store offset=28 (i32.const 256) (i32.const 5))
      (i32.store8 offset=32 (i32.const 256) (i32.const 0))  ;; none
      (i32.store offset=36 (i32.const 256) (i32.const 0))
      (i32.store offset=40 (i32.const 256) (i32.const 0))
      (i32.const 256))

    ;; execute: func(context: run-context, payload: option<payload>)
    ;;          -> result<string, string>
    ;;
    ;; Parameters: run-context alone flattens to 21 core values (5 strings,
    ;; an enum, three option<datetime> of 3 values each, a u64 and a list),
    ;; more than MAX_FLAT_PARAMS = 16, so the host allocates a tuple of both
    ;; arguments with `realloc` (align 8), stores them there and passes one
    ;; i32 pointer. This task does not look at its arguments.
    ;;
    ;; Result: result<string, string> flattens to 3 core values, more than
    ;; MAX_FLAT_RESULTS = 1, so the core function returns a pointer to the
    ;; result. Layout (align 4, size 12), here at address 320:
    ;;   +0 discriminant (u8: 0 = ok, 1 = err)
    ;;   +4 string.ptr   +8 string.len
    (func (export "execute") (param $args i32) (result i32)
      ;; log.write(level::info, "WAT", "Hello from WebAssembly text!")
      (call $write
        (i32.const 2)                         ;; level: info
        (i32.const 1144) (i32.const 3)        ;; event-code: "WAT"
        (i32.const 1152) (i32.const 28))      ;; message
      ;; ok("written by hand")
      (i32.store8 offset=0 (i32.const 320) (i32.const 0))
      (i32.store  offset=4 (i32.const 320) (i32.const 1184))
      (i32.store  offset=8 (i32.const 320) (i32.const 15))
      (i32.const 320))
  )
  (core instance $task (instantiate $Task
    (with "env" (instance (export "memory" (memory $mem))))
    (with "log" (instance (export "write" (func $write-lowered))))))

  ;; ---------------------------------------------------------------------
  ;; 5. Lifting and exporting. The results are static data, so no
  ;;    post-return cleanup is needed.
  ;; ---------------------------------------------------------------------
  (type $describe-type (func (result $task-info)))
  (type $execute-type (func
    (param "context" $run-context)
    (param "payload" (option $payload))
    (result (result string (error string)))))

  (func $describe (type $describe-type)
    (canon lift (core func $task "describe")
      (memory $mem) (realloc $realloc) string-encoding=utf8))
  (func $execute (type $execute-type)
    (canon lift (core func $task "execute")
      (memory $mem) (realloc $realloc) string-encoding=utf8))

  ;; The `task` interface: its functions, and the types it `use`s from
  ;; `types` re-exported under the same names, as wit-component does.
  (instance $task-instance
    (export "task-info" (type $task-info))
    (export "run-context" (type $run-context))
    (export "payload" (type $payload))
    (export "describe" (func $describe))
    (export "execute" (func $execute)))
  (export "cronwerk:task/task@0.1.0" (instance $task-instance))
)
