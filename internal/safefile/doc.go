// Package safefile reads files that come from outside steward (spec files,
// package tarballs, digest files) so that a file that is not a file cannot
// block, exhaust or mislead the reader.
//
// The contract:
//
//   - OpenRegular opens with O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_NOCTTY, so that
//     opening a FIFO never waits for a writer and a terminal never becomes
//     the controlling one, checks the open descriptor with fstat(2) (not the
//     path, which may change between a check and the open) and refuses
//     anything but a regular file with an error (*NotRegularError, matching
//     ErrNotRegular) that names the path and what it is: a FIFO, a socket, a
//     character or block device, a directory. Symbolic links are followed:
//     a link to /dev/zero is refused as the character device it leads to.
//     A regular file is returned in blocking mode.
//   - ReadRegular reads a whole regular file of at most max bytes. A file
//     larger than max (by its size, or by what a read returns should it grow
//     meanwhile) is refused with a *TooLargeError (matching ErrTooLarge) that
//     names the path and the limit, before more than max+1 bytes are read.
//     It reads in chunks of 64 KiB and checks ctx before each, so a read on a
//     slow file system ends soon after ctx does.
//
// Errors from the operating system are *fs.PathError values naming the path
// and match fs.ErrNotExist and friends as usual.
package safefile
