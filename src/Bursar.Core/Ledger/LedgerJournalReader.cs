using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;

namespace Bursar.Core.Ledger;

/// <summary>
/// Reads a journal file a batch at a time, as its caller asks for the next one: one JSON <see cref="LedgerRecord"/> a
/// line, up to the first zero byte (the unused, preallocated rest of a mapped segment). A replay of a 16 MB segment
/// (~20,000 records) so never holds more than one batch in memory nor writes it to the store in one piece: the records
/// die young instead of being promoted through the collector's generations while one long write runs. A line cut off by
/// a crash mid-copy is skipped; the rest of the file is still good.
/// </summary>
/// <remarks>
/// Pull-based (the caller writes a batch, then asks for the next) so one reader serves the writer thread's blocking
/// replay and the awaited one alike. The reads themselves are synchronous: 64 KiB at a time from the page cache.
/// </remarks>
internal sealed class LedgerJournalReader : IDisposable
{
    private readonly FileStream _file;
    private readonly int _batchSize;
    private readonly byte[] _chunk = ArrayPool<byte>.Shared.Rent(1 << 16);
    private readonly ArrayBufferWriter<byte> _line = new(2048); // a line that runs on past the end of the chunk read so far
    private int _at;
    private int _end;
    private bool _ended; // read to the file's end or to its first zero byte: nothing after that is ever read
    private bool _disposed;

    private LedgerJournalReader(FileStream file, int batchSize)
    {
        _file = file;
        _batchSize = batchSize;
    }

    /// <summary>Opens the journal file at <paramref name="path"/> to be read in batches of at most <paramref name="batchSize"/> records.</summary>
    /// <exception cref="FileNotFoundException">The file is gone (a concurrent replay wrote and removed it).</exception>
    public static LedgerJournalReader Open(string path, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        // shared with the writer, which may still hold the segment mapped; unbuffered (1): the reader reads whole chunks itself
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1);
        return new LedgerJournalReader(file, batchSize);
    }

    /// <summary>
    /// The next records of the file, at most the batch size of them, in file order; null once the file is read to its end.
    /// Each batch is a new list: the caller may hand it to the store and forget it.
    /// </summary>
    public IReadOnlyList<LedgerRecord>? ReadBatch()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        List<LedgerRecord>? batch = null;
        while (TryRead(out var record))
        {
            (batch ??= new List<LedgerRecord>(_batchSize)).Add(record);
            if (batch.Count == _batchSize) break;
        }
        return batch;
    }

    private bool TryRead([NotNullWhen(true)] out LedgerRecord? record)
    {
        while (true)
        {
            if (_at == _end)
            {
                if (!_ended)
                {
                    Fill();
                    continue;
                }
                record = null;
                if (_line.WrittenCount == 0) return false;
                // a last line without its newline: whole if it parses, cut off by a crash if not
                record = Parse(_line.WrittenSpan);
                _line.ResetWrittenCount();
                if (record is not null) return true;
                continue;
            }
            var span = _chunk.AsSpan(_at, _end - _at);
            var nl = span.IndexOf((byte)'\n');
            if (nl < 0)
            {
                _line.Write(span); // the line goes on in the next chunk
                _at = _end;
                continue;
            }
            if (_line.WrittenCount == 0)
            {
                record = Parse(span[..nl]); // the whole line is in this chunk: no copy
            }
            else
            {
                _line.Write(span[..nl]);
                record = Parse(_line.WrittenSpan);
                _line.ResetWrittenCount();
            }
            _at += nl + 1;
            if (record is not null) return true;
        }
    }

    private void Fill()
    {
        var n = _file.Read(_chunk, 0, _chunk.Length);
        var zero = _chunk.AsSpan(0, n).IndexOf((byte)0);
        _at = 0;
        _end = zero >= 0 ? zero : n;
        _ended = n == 0 || zero >= 0;
    }

    private static LedgerRecord? Parse(ReadOnlySpan<byte> json)
    {
        json = json.Trim(" \t\r"u8);
        if (json.IsEmpty) return null;
        try
        {
            return JsonSerializer.Deserialize(json, LedgerJsonContext.Default.LedgerRecord);
        }
        catch (JsonException)
        {
            return null; // a line cut off by a crash mid-write
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _file.Dispose();
        ArrayPool<byte>.Shared.Return(_chunk);
    }
}
