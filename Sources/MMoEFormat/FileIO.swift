#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import MMoECore

/// POSIX file access for the codecs: read-only mappings and atomic replacement.
/// All system calls of this module go through here.
package enum FileIO {
    static func errnoText() -> String { String(cString: strerror(errno)) }

    /// Maps a whole regular file read-only. The mapping is released when the storage dies.
    /// The file is opened without blocking (a FIFO or device never hangs the open) and
    /// refused unless it is a regular file.
    package static func map(path: String) throws(FormatError) -> ByteStorage {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .io(path: path, operation: "open", reason: errnoText()) }
        defer { close(fd) }
        return try map(fd: fd, path: path)
    }

    /// Maps the side file `relative` (a model's external data, a checkpoint's data shard) that
    /// must lie inside `folder`: every component is opened with `O_NOFOLLOW` below the folder,
    /// so no symbolic link (of the file or of any directory on the way), no `..`, no absolute
    /// path and nothing but a regular file is accepted.
    package static func mapBeneath(folder: String, relative: String) throws(FormatError) -> ByteStorage {
        let shown = folder.isEmpty ? relative : folder + "/" + relative
        let components = relative.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !relative.hasPrefix("/"), !components.isEmpty,
            components.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("\0") })
        else {
            throw .io(
                path: shown, operation: "open",
                reason: "the side file's path must stay inside the model's folder (no absolute path, '..', '.' or empty component)")
        }
        var current = open(folder.isEmpty ? "." : folder, O_RDONLY | O_CLOEXEC | O_DIRECTORY)
        guard current >= 0 else { throw .io(path: folder, operation: "open", reason: errnoText()) }
        for (index, component) in components.enumerated() {
            let last = index == components.count - 1
            let flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (last ? O_NONBLOCK : O_DIRECTORY)
            let next = openat(current, component, flags)
            let failure = errno
            close(current)
            guard next >= 0 else {
                let reason =
                    failure == ELOOP || failure == ENOTDIR
                    ? "'\(component)' is a symbolic link or not a directory; side files must be regular files inside the model's folder"
                    : String(cString: strerror(failure))
                throw .io(path: shown, operation: "open", reason: reason)
            }
            current = next
        }
        defer { close(current) }
        return try map(fd: current, path: shown)
    }

    private static func map(fd: Int32, path: String) throws(FormatError) -> ByteStorage {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(path: path, operation: "stat", reason: errnoText()) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw .io(path: path, operation: "read", reason: "not a regular file") }
        let size = Int(info.st_size)
        if size == 0 { return ByteStorage(copying: []) }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw .io(path: path, operation: "map", reason: errnoText())
        }
        let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(address), count: size)
        return ByteStorage(bytes: bytes) { bytes in
            if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
        }
    }

    /// Reads a whole file into memory (for small side files such as specs and inputs).
    package static func readAll(path: String, limit: Int) throws(FormatError) -> [UInt8] {
        let storage = try map(path: path)
        guard storage.bytes.count <= limit else {
            throw .io(path: path, operation: "read", reason: "file is larger than the \(limit)-byte limit")
        }
        return Array(storage.bytes)
    }

    /// A fresh temporary path in the same folder as `path` (so a rename replaces atomically).
    package static func temporaryPath(for path: String) -> String {
        let folder = folder(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        return "\(folder)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Removes a temporary file after a failed write (best effort).
    package static func discard(_ temporary: String) { unlink(temporary) }

    /// fsyncs a finished temporary file, renames it over `path`, fsyncs the folder.
    package static func commit(temporary: String, to path: String) throws(FormatError) {
        let fd = open(temporary, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw .io(path: temporary, operation: "open", reason: reason)
        }
        let synced = fsync(fd) == 0
        let reason = synced ? "" : errnoText()
        close(fd)
        guard synced else {
            unlink(temporary)
            throw .io(path: temporary, operation: "fsync", reason: reason)
        }
        guard rename(temporary, path) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw .io(path: path, operation: "rename", reason: reason)
        }
        let directory = open(folder(of: path), O_RDONLY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }

    /// Writes a file atomically: a temporary file in the same folder, fsync, rename over the
    /// target, fsync of the folder. `body` receives a sink that appends bytes.
    package static func writeAtomically(path: String, _ body: (inout FileSink) throws(FormatError) -> Void) throws(FormatError) {
        // Only a regular file is ever replaced (never a FIFO, a device such as /dev/null, a
        // directory or a symbolic link), and it keeps its permission bits.
        var existing = stat()
        var mode: mode_t = 0o644
        if lstat(path, &existing) == 0 {
            guard (existing.st_mode & S_IFMT) == S_IFREG else {
                throw .io(
                    path: path, operation: "replace",
                    reason: "the output exists and is not a regular file (a FIFO, device, directory or symbolic link); choose another path")
            }
            mode = existing.st_mode & 0o7777
        }
        let temporary = temporaryPath(for: path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(path: temporary, operation: "create", reason: errnoText()) }
        _ = fchmod(fd, mode)
        var sink = FileSink(fd: fd, path: temporary)
        do throws(FormatError) {
            try body(&sink)
            try sink.flush()
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        guard close(fd) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw .io(path: temporary, operation: "close", reason: reason)
        }
        try commit(temporary: temporary, to: path)
    }
}

/// A buffered append-only writer on a file descriptor.
package struct FileSink {
    let fd: Int32
    let path: String
    var buffer: [UInt8] = []
    package private(set) var written = 0

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    package mutating func write(_ bytes: [UInt8]) throws(FormatError) {
        buffer.append(contentsOf: bytes)
        written += bytes.count
        if buffer.count >= 1 << 20 { try flush() }
    }

    package mutating func write(_ bytes: UnsafeRawBufferPointer) throws(FormatError) {
        if bytes.count < 1 << 16 {
            buffer.append(contentsOf: bytes)
            written += bytes.count
            if buffer.count >= 1 << 20 { try flush() }
            return
        }
        try flush()
        try writeDirect(bytes)
        written += bytes.count
    }

    package mutating func zeros(_ count: Int) throws(FormatError) {
        try write([UInt8](repeating: 0, count: count))
    }

    package mutating func flush() throws(FormatError) {
        let pending = buffer
        buffer.removeAll(keepingCapacity: true)
        var failure: FormatError?
        pending.withUnsafeBytes { bytes in
            do throws(FormatError) { try writeDirect(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    private func writeDirect(_ bytes: UnsafeRawBufferPointer) throws(FormatError) {
        var done = 0
        while done < bytes.count {
            guard let base = bytes.baseAddress else { return }
            let n = Glibc_write(fd, base + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "write", reason: FileIO.errnoText())
            }
            done += n
        }
    }
}

@inline(__always)
private func Glibc_write(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
        return Glibc.write(fd, pointer, count)
    #else
        return Darwin.write(fd, pointer, count)
    #endif
}
