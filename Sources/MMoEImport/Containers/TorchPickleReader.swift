import MMoECore

/// A value built by the pickle interpreter. Only what a state_dict needs exists here.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    case global(String)
    case storage(TorchStorageRef)
    case tensor(TorchTensorRef)
    case mark
}

final class PickleList { var items: [PickleValue] = [] }

final class PickleDict {
    var keys: [String] = []
    var values: [String: PickleValue] = [:]
    func set(_ key: String, _ value: PickleValue) {
        if values[key] == nil { keys.append(key) }
        values[key] = value
    }
}

/// A persistent storage reference: `('storage', <torch.XStorage>, key, location, numel)`.
struct TorchStorageRef {
    let key: String
    let dtype: SourceDType
    let count: Int
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
struct TorchTensorRef {
    let storage: TorchStorageRef
    let offset: Int
    let shape: [Int]
    let strides: [Int]
}

/// A pickle interpreter for `data.pkl` of torch.save archives that executes nothing.
///
/// It knows the opcodes of protocols 2 to 5 that state_dicts use and a fixed allow-list of
/// globals (OrderedDict, the tensor and parameter rebuild functions, the typed storage
/// classes). Any other global, opcode or call is refused with its name. Stack, memo and
/// nesting are bounded.
struct TorchPickleReader {
    static let maxMemo = 1 << 17
    static let maxStack = 1 << 20
    static let maxDepth = 64

    static let storageTypes: [String: SourceDType] = [
        "torch.FloatStorage": .f32, "torch.DoubleStorage": .f64, "torch.HalfStorage": .f16, "torch.BFloat16Storage": .bf16,
        "torch.LongStorage": .i64, "torch.IntStorage": .i32, "torch.ShortStorage": .i16, "torch.CharStorage": .i8,
        "torch.ByteStorage": .u8, "torch.BoolStorage": .bool,
    ]
    static let callables: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
    ]

    let bytes: [UInt8]
    let path: String
    var position = 0
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]

    init(bytes: [UInt8], path: String) {
        self.bytes = bytes
        self.path = path
    }

    func fail(_ reason: String) -> ImportError { .malformed(path: path, offset: position, reason: "pickle: \(reason)") }

    mutating func byte() throws(ImportError) -> UInt8 {
        guard position < bytes.count else { throw fail("unexpected end of data") }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func take(_ count: Int) throws(ImportError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - position else { throw fail("length \(count) runs past the end of the data") }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    mutating func uint(_ size: Int) throws(ImportError) -> Int {
        let slice = try take(size)
        var value: UInt64 = 0
        for (i, b) in slice.enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
        guard value <= UInt64(Int.max) else { throw fail("length out of range") }
        return Int(value)
    }

    mutating func line() throws(ImportError) -> String {
        guard let end = bytes[position...].prefix(4096).firstIndex(of: 0x0A) else { throw fail("unterminated text line") }
        defer { position = end + 1 }
        return String(decoding: bytes[position..<end], as: UTF8.self)
    }

    mutating func pop() throws(ImportError) -> PickleValue {
        guard let value = stack.popLast() else { throw fail("stack underflow") }
        if case .mark = value { throw fail("unexpected mark") }
        return value
    }

    mutating func push(_ value: PickleValue) throws(ImportError) {
        guard stack.count < TorchPickleReader.maxStack else {
            throw .limitExceeded(path: path, what: "pickle stack depth", limit: TorchPickleReader.maxStack)
        }
        stack.append(value)
    }

    mutating func popToMark() throws(ImportError) -> [PickleValue] {
        guard let mark = marks.popLast(), mark <= stack.count else { throw fail("no mark") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    mutating func memoize(_ index: Int) throws(ImportError) {
        guard let top = stack.last else { throw fail("memoize on empty stack") }
        guard memo.count < TorchPickleReader.maxMemo || memo[index] != nil else {
            throw .limitExceeded(path: path, what: "pickle memo size", limit: TorchPickleReader.maxMemo)
        }
        memo[index] = top
    }

    /// Every list and dict created, so they can be emptied one by one at the end: freeing a
    /// deeply nested chain recursively could exhaust the stack.
    var containers: [AnyObject] = []

    /// A tuple of `items`, refusing nesting deeper than `maxDepth`.
    func tuple(_ items: [PickleValue]) throws(ImportError) -> PickleValue {
        var depth = 1
        for item in items { if case .tuple(_, let d) = item { depth = max(depth, d + 1) } }
        guard depth <= TorchPickleReader.maxDepth else {
            throw .limitExceeded(path: path, what: "pickle tuple nesting depth", limit: TorchPickleReader.maxDepth)
        }
        return .tuple(items, depth: depth)
    }

    /// Breaks every container's references iteratively.
    mutating func tearDown() {
        for container in containers {
            if let list = container as? PickleList { list.items.removeAll() }
            if let dict = container as? PickleDict { dict.values.removeAll() }
        }
        containers.removeAll()
        stack.removeAll()
        memo.removeAll()
    }

    func int(_ value: PickleValue, _ what: String) throws(ImportError) -> Int {
        guard case .int(let v) = value, v >= 0, v <= Int64(Int.max) else { throw fail("\(what) is not a non-negative integer") }
        return Int(v)
    }

    func ints(_ value: PickleValue, _ what: String) throws(ImportError) -> [Int] {
        guard case .tuple(let items, _) = value, items.count <= 16 else { throw fail("\(what) is not a short tuple") }
        var result: [Int] = []
        for item in items { result.append(try int(item, what)) }
        return result
    }

    /// Applies an allowed callable.
    mutating func call(_ name: String, _ arguments: [PickleValue]) throws(ImportError) -> PickleValue {
        switch name {
        case "collections.OrderedDict":
            let dict = PickleDict()
            containers.append(dict)
            return .dict(dict)
        case "torch._utils._rebuild_tensor_v2":
            guard arguments.count >= 4, case .storage(let storage) = arguments[0] else {
                throw fail("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)")
            }
            let shape = try ints(arguments[2], "tensor size")
            let strides = try ints(arguments[3], "tensor stride")
            guard shape.count == strides.count else { throw fail("tensor size and stride differ in rank") }
            return .tensor(
                TorchTensorRef(storage: storage, offset: try int(arguments[1], "storage offset"), shape: shape, strides: strides))
        case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
            guard let first = arguments.first, case .tensor = first else { throw fail("\(name) needs a tensor") }
            return first
        default:
            throw .forbiddenGlobal(path: path, name: name)
        }
    }

    /// Runs the program; returns the value left by STOP.
    mutating func run() throws(ImportError) -> PickleValue {
        while true {
            let op = try byte()
            switch op {
            case 0x80: _ = try byte()  // PROTO
            case 0x95: _ = try take(8)  // FRAME
            case 0x2E:  // STOP
                return try pop()
            case 0x28:  // MARK
                marks.append(stack.count)
                guard marks.count <= TorchPickleReader.maxStack else {
                    throw .limitExceeded(path: path, what: "pickle marks", limit: TorchPickleReader.maxStack)
                }
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4B: try push(.int(Int64(try uint(1))))  // BININT1
            case 0x4D: try push(.int(Int64(try uint(2))))  // BININT2
            case 0x4A:  // BININT
                try push(.int(Int64(Int32(truncatingIfNeeded: try uint(4)))))
            case 0x8A:  // LONG1
                let n = Int(try byte())
                guard n <= 8 else { throw fail("integer wider than 64 bits") }
                let slice = try take(n)
                var value: Int64 = 0
                for (i, b) in slice.enumerated() { value |= Int64(b) << (8 * Int64(i)) }
                if n > 0, n < 8, let last = slice.last, last & 0x80 != 0 { value -= Int64(1) << (8 * Int64(n)) }
                try push(.int(value))
            case 0x47:  // BINFLOAT (big-endian)
                let slice = try take(8)
                try push(.float(Double(bitPattern: slice.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
            case 0x58, 0x8C, 0x8D:  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                let n = op == 0x58 ? try uint(4) : op == 0x8C ? Int(try byte()) : try uint(8)
                try push(.string(String(decoding: try take(n), as: UTF8.self)))
            case 0x55, 0x54:  // SHORT_BINSTRING, BINSTRING
                let n = op == 0x55 ? Int(try byte()) : try uint(4)
                try push(.string(String(decoding: try take(n), as: UTF8.self)))
            case 0x43, 0x42, 0x8E:  // SHORT_BINBYTES, BINBYTES, BINBYTES8
                let n = op == 0x43 ? Int(try byte()) : op == 0x42 ? try uint(4) : try uint(8)
                try push(.bytes(Array(try take(n))))
            case 0x29: try push(try tuple([]))
            case 0x74: try push(try tuple(try popToMark()))
            case 0x85: try push(try tuple([try pop()]))
            case 0x86:
                let b = try pop()
                let a = try pop()
                try push(try tuple([a, b]))
            case 0x87:
                let c = try pop()
                let b = try pop()
                let a = try pop()
                try push(try tuple([a, b, c]))
            case 0x5D:
                let list = PickleList()
                containers.append(list)
                try push(.list(list))
            case 0x7D:
                let dict = PickleDict()
                containers.append(dict)
                try push(.dict(dict))
            case 0x61:  // APPEND
                let item = try pop()
                guard case .list(let list)? = stack.last else { throw fail("APPEND without a list") }
                list.items.append(item)
            case 0x65:  // APPENDS
                let items = try popToMark()
                guard case .list(let list)? = stack.last else { throw fail("APPENDS without a list") }
                list.items += items
            case 0x73:  // SETITEM
                let value = try pop()
                let key = try pop()
                try setItems([key, value])
            case 0x75:  // SETITEMS
                try setItems(try popToMark())
            case 0x71: try memoize(Int(try byte()))  // BINPUT
            case 0x72: try memoize(try uint(4))  // LONG_BINPUT
            case 0x94: try memoize(memo.count)  // MEMOIZE
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let index = op == 0x68 ? Int(try byte()) : try uint(4)
                guard let value = memo[index] else { throw fail("memo entry \(index) is not defined") }
                try push(value)
            case 0x63:  // GLOBAL
                let module = try line()
                let name = try line()
                try push(try global(module, name))
            case 0x93:  // STACK_GLOBAL
                let nameValue = try pop()
                let moduleValue = try pop()
                guard case .string(let name) = nameValue, case .string(let module) = moduleValue else {
                    throw fail("STACK_GLOBAL needs two strings")
                }
                try push(try global(module, name))
            case 0x52:  // REDUCE
                let arguments = try pop()
                let callable = try pop()
                guard case .global(let name) = callable else { throw fail("REDUCE on something that is not an allowed global") }
                guard case .tuple(let items, _) = arguments else { throw fail("REDUCE arguments are not a tuple") }
                try push(try call(name, items))
            case 0x81:  // NEWOBJ
                let arguments = try pop()
                let cls = try pop()
                guard case .global(let name) = cls, case .tuple(let items, _) = arguments else {
                    throw fail("NEWOBJ on something that is not an allowed global")
                }
                try push(try call(name, items))
            case 0x62:  // BUILD: state for OrderedDict (_metadata) or parameters; ignored.
                _ = try pop()
                guard !stack.isEmpty else { throw fail("BUILD on empty stack") }
            case 0x51:  // BINPERSID
                let pid = try pop()
                try push(try persistentLoad(pid))
            default:
                throw .unsupported(
                    path: path, reason: "pickle opcode 0x\(String(op, radix: 16)) at offset \(position - 1) is not allowed in a state_dict")
            }
        }
    }

    func global(_ module: String, _ name: String) throws(ImportError) -> PickleValue {
        let full = "\(module).\(name)"
        if TorchPickleReader.callables.contains(full) || TorchPickleReader.storageTypes[full] != nil { return .global(full) }
        throw .forbiddenGlobal(path: path, name: full)
    }

    mutating func setItems(_ items: [PickleValue]) throws(ImportError) {
        guard items.count % 2 == 0, case .dict(let dict)? = stack.last else { throw fail("SETITEM(S) without a dict") }
        var index = 0
        while index < items.count {
            let key: String
            switch items[index] {
            case .string(let s): key = s
            case .int(let i): key = String(i)
            default: throw fail("dictionary key is not a string")
            }
            dict.set(key, items[index + 1])
            index += 2
        }
    }

    func persistentLoad(_ pid: PickleValue) throws(ImportError) -> PickleValue {
        guard case .tuple(let items, _) = pid, items.count == 5, case .string("storage") = items[0] else {
            throw fail("persistent id is not ('storage', type, key, location, numel)")
        }
        guard case .global(let typeName) = items[1], let dtype = TorchPickleReader.storageTypes[typeName] else {
            throw fail("persistent id names an unknown storage type")
        }
        guard case .string(let key) = items[2] else { throw fail("storage key is not a string") }
        return .storage(TorchStorageRef(key: key, dtype: dtype, count: try int(items[4], "storage size")))
    }
}
