;; A hostile task for the outgoing-body cap: it builds BODIES outgoing
;; wasi:http requests, never sends them, and writes into each body as much
;; as `check-write` allows (up to 1 MiB per write), keeping everything. The
;; test fills in BODIES.
(component $C
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


  (import "wasi:io/error@0.2.0" (instance $io-error
    (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $C $error (type $error'))
    (export "error" (type $err (eq $error')))
    (export "output-stream" (type $os (sub resource)))
    (type $se' (variant (case "last-operation-failed" (own $err)) (case "closed")))
    (export "stream-error" (type $se (eq $se')))
    (export "[method]output-stream.check-write" (func
      (param "self" (borrow $os)) (result (result u64 (error $se)))))
    (export "[method]output-stream.write" (func
      (param "self" (borrow $os)) (param "contents" (list u8))
      (result (result (error $se)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (alias export $streams "[method]output-stream.check-write" (func $check-write))
  (alias export $streams "[method]output-stream.write" (func $write))
  (import "wasi:http/types@0.2.0" (instance $http
    (alias outer $C $output-stream (type $os'))
    (export "output-stream" (type $os (eq $os')))
    (export "fields" (type $fields (sub resource)))
    (export "outgoing-request" (type $req (sub resource)))
    (export "outgoing-body" (type $body (sub resource)))
    (export "[constructor]fields" (func (result (own $fields))))
    (export "[constructor]outgoing-request" (func
      (param "headers" (own $fields)) (result (own $req))))
    (export "[method]outgoing-request.body" (func
      (param "self" (borrow $req)) (result (result (own $body)))))
    (export "[method]outgoing-body.write" (func
      (param "self" (borrow $body)) (result (result (own $os)))))))
  (alias export $http "[constructor]fields" (func $fields-new))
  (alias export $http "[constructor]outgoing-request" (func $request-new))
  (alias export $http "[method]outgoing-request.body" (func $request-body))
  (alias export $http "[method]outgoing-body.write" (func $body-write))

  (core module $Memory
    ;; 17 pages: a 1 MiB payload at 65536 and room for the argument copy
    (memory (export "memory") 18)
    (global $heap (mut i32) (i32.const 1114112))
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
        (then (drop (memory.grow (i32.const 16)))))
      (local.get $ptr)))
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "memory" (core memory $mem))
  (alias core export $memory "realloc" (core func $realloc))

  (core func $fields-new-lowered (canon lower (func $fields-new)))
  (core func $request-new-lowered (canon lower (func $request-new)))
  (core func $request-body-lowered (canon lower (func $request-body) (memory $mem)))
  (core func $body-write-lowered (canon lower (func $body-write) (memory $mem)))
  (core func $check-write-lowered (canon lower (func $check-write) (memory $mem)))
  (core func $write-lowered (canon lower (func $write) (memory $mem)))

  (core module $Task
    (import "env" "memory" (memory 1))
    (import "http" "fields-new" (func $fields-new (result i32)))
    (import "http" "request-new" (func $request-new (param i32) (result i32)))
    (import "http" "request-body" (func $request-body (param i32 i32)))
    (import "http" "body-write" (func $body-write (param i32 i32)))
    (import "http" "check-write" (func $check-write (param i32 i32)))
    (import "http" "write" (func $write (param i32 i32 i32 i32)))
    (data (i32.const 1024) "Acme.BodyHog")   ;; 12 bytes
    (data (i32.const 1048) "kept")           ;;  4 bytes

    ;; return areas: 512 (result<own<_>>: +0 disc, +4 handle),
    ;; 528 (result<u64, stream-error>: +0 disc, +8 u64), 560 (write)
    (func $hog
      (local $i i32) (local $req i32) (local $body i32) (local $stream i32)
      (local $room i64)
      (memory.fill (i32.const 65536) (i32.const 97) (i32.const 1048576))
      (block $done
        (loop $bodies
          (br_if $done (i32.ge_u (local.get $i) (i32.const BODIES)))
          (local.set $req (call $request-new (call $fields-new)))
          (call $request-body (local.get $req) (i32.const 512))
          (if (i32.load8_u (i32.const 512)) (then unreachable))
          (local.set $body (i32.load (i32.const 516)))
          (call $body-write (local.get $body) (i32.const 512))
          (if (i32.load8_u (i32.const 512)) (then unreachable))
          (local.set $stream (i32.load (i32.const 516)))
          (block $full
            (loop $writes
              (call $check-write (local.get $stream) (i32.const 528))
              (br_if $full (i32.load8_u (i32.const 528)))
              (local.set $room (i64.load (i32.const 536)))
              (br_if $full (i64.eqz (local.get $room)))
              (if (i64.gt_u (local.get $room) (i64.const 1048576))
                (then (local.set $room (i64.const 1048576))))
              (call $write (local.get $stream)
                (i32.const 65536) (i32.wrap_i64 (local.get $room)) (i32.const 560))
              (br_if $full (i32.load8_u (i32.const 560)))
              (br $writes)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $bodies))))

    (func (export "describe") (result i32)
      (i32.store offset=0  (i32.const 256) (i32.const 1024))
      (i32.store offset=4  (i32.const 256) (i32.const 12))
      (i32.store offset=8  (i32.const 256) (i32.const 1024))
      (i32.store offset=12 (i32.const 256) (i32.const 12))
      (i32.store offset=16 (i32.const 256) (i32.const 1024))
      (i32.store offset=20 (i32.const 256) (i32.const 12))
      (i32.store offset=24 (i32.const 256) (i32.const 1048))
      (i32.store offset=28 (i32.const 256) (i32.const 4))
      (i32.store8 offset=32 (i32.const 256) (i32.const 0))
      (i32.const 256))

    (func (export "execute") (param i32) (result i32)
      (call $hog)
      (i32.store8 offset=0 (i32.const 320) (i32.const 0))
      (i32.store  offset=4 (i32.const 320) (i32.const 1048))
      (i32.store  offset=8 (i32.const 320) (i32.const 4))
      (i32.const 320))
  )
  (core instance $task (instantiate $Task
    (with "env" (instance (export "memory" (memory $mem))))
    (with "http" (instance
      (export "fields-new" (func $fields-new-lowered))
      (export "request-new" (func $request-new-lowered))
      (export "request-body" (func $request-body-lowered))
      (export "body-write" (func $body-write-lowered))
      (export "check-write" (func $check-write-lowered))
      (export "write" (func $write-lowered))))))

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
  (instance $task-instance
    (export "task-info" (type $task-info))
    (export "run-context" (type $run-context))
    (export "payload" (type $payload))
    (export "describe" (func $describe))
    (export "execute" (func $execute)))
  (export "cronwerk:task/task@0.1.0" (instance $task-instance))
)
