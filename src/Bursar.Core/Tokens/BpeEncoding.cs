using System.Buffers;
using System.Buffers.Text;
using System.IO.Compression;
using System.Numerics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.RegularExpressions;

namespace Bursar.Core.Tokens;

/// <summary>
/// A tiktoken byte-pair encoding (o200k, cl100k) held compactly: every token's bytes in one array, a table of offsets and
/// an open-addressing hash table of ints. o200k's 200,000 tokens take ~4.5 MB this way, against ~40 MB of managed heap
/// for a tokenizer that keeps a dictionary entry and an array per token (in both directions) — memory every gateway
/// process would hold whether or not a call ever needed an estimate.
/// </summary>
/// <remarks>
/// Counts and ids are the tiktoken algorithm's: the text is split at the encoding's special tokens, each stretch between
/// them into pieces by the encoding's pattern, and each piece's UTF-8 bytes merged pair by pair, lowest rank first (the
/// leftmost of equal ranks). The vocabulary is the one the <c>Microsoft.ML.Tokenizers.Data.*</c> packages ship.
/// Merging is quadratic in one piece's length; <see cref="TokenCounter"/> keeps pieces short on hostile input.
/// </remarks>
public sealed partial class BpeEncoding
{
    private const int StackBytes = 1024;

    private readonly byte[] _bytes;     // every token's bytes, in file order
    private readonly int[] _starts;     // token i's bytes are _bytes[_starts[i].._starts[i + 1]]
    private readonly int[] _ranks;      // token i's rank (its id)
    private readonly int[] _slots;      // open addressing: token index + 1, 0 = empty
    private readonly int _mask;
    private readonly (string Text, int Id)[] _special;
    private readonly Regex _pattern;

    /// <summary>The encoding's name, e.g. <c>o200k_base</c>.</summary>
    public string Name { get; }

    /// <summary>How many ordinary (non-special) tokens the vocabulary has.</summary>
    public int TokenCount => _ranks.Length;

    private BpeEncoding(string name, byte[] bytes, int[] starts, int[] ranks, Regex pattern, (string, int)[] special)
    {
        Name = name;
        _bytes = bytes;
        _starts = starts;
        _ranks = ranks;
        _pattern = pattern;
        _special = special;
        var size = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, ranks.Length * 2));
        _slots = new int[size];
        _mask = size - 1;
        for (var i = 0; i < ranks.Length; i++)
        {
            var token = Token(i);
            if (token.IsEmpty) continue;
            var h = Hash(token) & _mask;
            while (true)
            {
                var s = _slots[h];
                if (s == 0) { _slots[h] = i + 1; break; }
                if (Token(s - 1).SequenceEqual(token)) break; // a duplicate line: the first one's rank stands
                h = (h + 1) & _mask;
            }
        }
    }

    private static readonly Lazy<BpeEncoding> O200kLazy = new(() => Load("o200k_base", "Microsoft.ML.Tokenizers.Data.O200kBase", O200kPattern(),
        [("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)]));

    private static readonly Lazy<BpeEncoding> Cl100kLazy = new(() => Load("cl100k_base", "Microsoft.ML.Tokenizers.Data.Cl100kBase", Cl100kPattern(),
        [("<|endoftext|>", 100257), ("<|fim_prefix|>", 100258), ("<|fim_middle|>", 100259), ("<|fim_suffix|>", 100260), ("<|endofprompt|>", 100276)]));

    /// <summary>o200k_base: gpt-4o, gpt-4.1, gpt-5, o-series (and Bursar's Claude estimate).</summary>
    public static BpeEncoding O200k => O200kLazy.Value;

    /// <summary>cl100k_base: gpt-4 and gpt-3.5.</summary>
    public static BpeEncoding Cl100k => Cl100kLazy.Value;

    // the patterns tiktoken publishes for these encodings (cl100k's in the atomic-group form Microsoft.ML.Tokenizers uses)
    [GeneratedRegex(@"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")]
    private static partial Regex O200kPattern();

    [GeneratedRegex(@"'(?i:[sdmt]|ll|ve|re)|(?>[^\r\n\p{L}\p{N}]?)(?>\p{L}+)|(?>\p{N}{1,3})| ?(?>[^\s\p{L}\p{N}]+)(?>[\r\n]*)|(?>\s+)$|\s*[\r\n]|\s+(?!\S)|\s")]
    private static partial Regex Cl100kPattern();

    /// <summary>Reads a deflated <c>.tiktoken</c> file (lines of base64 token and rank) from the named data assembly.</summary>
    private static BpeEncoding Load(string name, string assembly, Regex pattern, (string, int)[] special)
    {
        var resource = name + ".tiktoken.deflate";
        using var deflated = Assembly.Load(assembly).GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"The token vocabulary {resource} is missing from {assembly}.");
        using var inflate = new DeflateStream(deflated, CompressionMode.Decompress);
        using var file = new MemoryStream();
        inflate.CopyTo(file);
        return Parse(name, file.GetBuffer().AsSpan(0, (int)file.Length), pattern, special);
    }

    /// <summary>
    /// Parses a vocabulary: lines of <c>&lt;base64 token&gt; &lt;rank&gt;</c> (tiktoken's own files) or of the base64 token
    /// alone, ranked by its line (the data packages' form, after a <c>Capacity: N</c> header).
    /// </summary>
    internal static BpeEncoding Parse(string name, ReadOnlySpan<byte> file, Regex pattern, (string, int)[] special)
    {
        var lines = file.Count((byte)'\n') + 1;
        var bytes = new byte[file.Length * 3 / 4 + 16]; // decoded base64 is at most 3/4 of the file
        var starts = new int[lines + 1];
        var ranks = new int[lines];
        int n = 0, used = 0, lineNo = 0, nextRank = 0;
        while (!file.IsEmpty)
        {
            lineNo++;
            var eol = file.IndexOf((byte)'\n');
            var line = eol < 0 ? file : file[..eol];
            file = eol < 0 ? default : file[(eol + 1)..];
            if (!line.IsEmpty && line[^1] == (byte)'\r') line = line[..^1];
            if (line.IsEmpty || (lineNo == 1 && line.StartsWith("Capacity:"u8))) continue;
            var space = line.IndexOf((byte)' ');
            var token = space < 0 ? line : line[..space];
            var rank = nextRank;
            if (token.IsEmpty
                || Base64.DecodeFromUtf8(token, bytes.AsSpan(used), out _, out var written) != OperationStatus.Done
                || (space >= 0 && (!Utf8Parser.TryParse(line[(space + 1)..], out rank, out var consumed) || consumed != line.Length - space - 1 || rank < 0)))
                throw new InvalidDataException($"{name}: line {lineNo} is not '<base64 token> [rank]'.");
            starts[n] = used;
            ranks[n] = rank;
            nextRank = rank + 1;
            used += written;
            n++;
        }
        starts[n] = used;
        return new BpeEncoding(name, bytes.AsSpan(0, used).ToArray(), starts.AsSpan(0, n + 1).ToArray(), ranks.AsSpan(0, n).ToArray(), pattern, special);
    }

    private ReadOnlySpan<byte> Token(int index) => _bytes.AsSpan(_starts[index], _starts[index + 1] - _starts[index]);

    /// <summary>FNV-1a over the bytes with a final avalanche, so the low bits the table masks by are well mixed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Hash(ReadOnlySpan<byte> bytes)
    {
        var h = 2166136261u;
        foreach (var b in bytes) h = (h ^ b) * 16777619u;
        h ^= h >> 16;
        h *= 0x85ebca6bu;
        h ^= h >> 13;
        return (int)h;
    }

    /// <summary>The rank of the token whose bytes are <paramref name="bytes"/>, or -1.</summary>
    public int Rank(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty) return -1;
        var h = Hash(bytes) & _mask;
        while (true)
        {
            var s = _slots[h];
            if (s == 0) return -1;
            if (Token(s - 1).SequenceEqual(bytes)) return _ranks[s - 1];
            h = (h + 1) & _mask;
        }
    }

    /// <summary>The pieces of <paramref name="text"/>: special tokens, and the pattern's pieces between them.</summary>
    public PieceEnumerator Pieces(ReadOnlySpan<char> text) => new(this, text);

    /// <summary>Tokens in <paramref name="text"/>: special tokens count one each, the rest piece by piece.</summary>
    public int CountTokens(ReadOnlySpan<char> text)
    {
        var n = 0;
        var pieces = new PieceEnumerator(this, text);
        while (pieces.MoveNext())
            n += pieces.SpecialId >= 0 ? 1 : CountPiece(text.Slice(pieces.Offset, pieces.Length));
        return n;
    }

    /// <summary>Appends the ids of <paramref name="text"/> to <paramref name="ids"/>.</summary>
    public void EncodeToIds(ReadOnlySpan<char> text, List<int> ids)
    {
        var pieces = new PieceEnumerator(this, text);
        while (pieces.MoveNext())
        {
            if (pieces.SpecialId >= 0) ids.Add(pieces.SpecialId);
            else EncodePiece(text.Slice(pieces.Offset, pieces.Length), ids);
        }
    }

    /// <summary>The ids of <paramref name="text"/>.</summary>
    public List<int> EncodeToIds(ReadOnlySpan<char> text)
    {
        var ids = new List<int>(text.Length / 3 + 1);
        EncodeToIds(text, ids);
        return ids;
    }

    /// <summary>Tokens of one piece taken as it is (no pre-tokenization, no special tokens): its bytes merged by rank.</summary>
    public int CountPiece(ReadOnlySpan<char> piece) => MergePiece(piece, null);

    /// <summary>Appends the ids of one piece taken as it is (no pre-tokenization, no special tokens).</summary>
    public void EncodePiece(ReadOnlySpan<char> piece, List<int> ids) => MergePiece(piece, ids);

    private int MergePiece(ReadOnlySpan<char> piece, List<int>? ids)
    {
        if (piece.IsEmpty) return 0;
        var max = Encoding.UTF8.GetMaxByteCount(piece.Length);
        byte[]? rented = null;
        var buffer = max <= StackBytes ? stackalloc byte[StackBytes] : (rented = ArrayPool<byte>.Shared.Rent(max)).AsSpan();
        try
        {
            var bytes = buffer[..ToUtf8(piece, buffer)];
            var whole = Rank(bytes);
            if (whole >= 0)
            {
                ids?.Add(whole);
                return 1;
            }
            return Merge(bytes, ids);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// UTF-8, except that a lone surrogate is written as its own three bytes (as the reference tokenizer does) rather
    /// than replaced by U+FFFD: a broken pair counts as the bytes a caller sent. <paramref name="buffer"/> holds
    /// <see cref="Encoding.GetMaxByteCount"/> bytes.
    /// </summary>
    private static int ToUtf8(ReadOnlySpan<char> text, Span<byte> buffer)
    {
        var written = 0;
        while (true)
        {
            var status = System.Text.Unicode.Utf8.FromUtf16(text, buffer[written..], out var read, out var n, replaceInvalidSequences: false);
            written += n;
            if (status == OperationStatus.Done) return written;
            // a lone surrogate at text[read]: U+D800..U+DFFF as 1110xxxx 10xxxxxx 10xxxxxx
            int c = text[read];
            buffer[written++] = (byte)(0xE0 | (c >> 12));
            buffer[written++] = (byte)(0x80 | ((c >> 6) & 0x3F));
            buffer[written++] = (byte)(0x80 | (c & 0x3F));
            text = text[(read + 1)..];
        }
    }

    /// <summary>
    /// tiktoken's merge: boundaries between the bytes, each with the rank of the pair it would join; the lowest rank's
    /// boundary is removed and its neighbours re-ranked until no adjacent pair is a token.
    /// </summary>
    private int Merge(ReadOnlySpan<byte> bytes, List<int>? ids)
    {
        var count = bytes.Length + 1;
        int[]? rentedStarts = null, rentedRanks = null;
        var starts = count <= 256 ? stackalloc int[count] : (rentedStarts = ArrayPool<int>.Shared.Rent(count)).AsSpan(0, count);
        var ranks = count <= 256 ? stackalloc int[count] : (rentedRanks = ArrayPool<int>.Shared.Rent(count)).AsSpan(0, count);
        try
        {
            for (var i = 0; i < count; i++) starts[i] = i;
            for (var i = 0; i < count; i++) ranks[i] = i + 2 < count ? PairRank(bytes, starts[i], starts[i + 2]) : int.MaxValue;
            while (count > 1)
            {
                var min = int.MaxValue;
                var at = -1;
                for (var i = 0; i < count - 1; i++)
                {
                    if (ranks[i] < min) { min = ranks[i]; at = i; }
                }
                if (at < 0) break;
                // join the parts at and at+1: the boundary at+1 goes; at's rank becomes that of the part after the join
                starts[(at + 2)..count].CopyTo(starts[(at + 1)..]);
                ranks[(at + 2)..count].CopyTo(ranks[(at + 1)..]);
                count--;
                ranks[at] = at + 2 < count ? PairRank(bytes, starts[at], starts[at + 2]) : int.MaxValue;
                if (at > 0) ranks[at - 1] = at + 1 < count ? PairRank(bytes, starts[at - 1], starts[at + 1]) : int.MaxValue;
            }
            if (ids is not null)
            {
                for (var i = 0; i < count - 1; i++)
                {
                    var id = Rank(bytes[starts[i]..starts[i + 1]]);
                    // a single byte is always a token in these encodings; a vocabulary without it is not one they ship
                    ids.Add(id >= 0 ? id : throw new InvalidDataException($"{Name}: no token for a single byte 0x{bytes[starts[i]]:X2}."));
                }
            }
            return count - 1;
        }
        finally
        {
            if (rentedStarts is not null) ArrayPool<int>.Shared.Return(rentedStarts);
            if (rentedRanks is not null) ArrayPool<int>.Shared.Return(rentedRanks);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int PairRank(ReadOnlySpan<byte> bytes, int start, int end)
    {
        var r = Rank(bytes[start..end]);
        return r < 0 ? int.MaxValue : r;
    }

    /// <summary>
    /// The pieces of a text: each special token on its own, and the stretches between them split by the encoding's pattern
    /// (matched within the stretch, as tiktoken does). Allocation-free.
    /// </summary>
    public ref struct PieceEnumerator
    {
        private readonly BpeEncoding _encoding;
        private readonly ReadOnlySpan<char> _text;
        private Regex.ValueMatchEnumerator _matches;
        private int _stretchStart, _stretchEnd, _next;
        private bool _inStretch;

        internal PieceEnumerator(BpeEncoding encoding, ReadOnlySpan<char> text)
        {
            _encoding = encoding;
            _text = text;
            _next = 0;
            _stretchStart = _stretchEnd = 0;
            _inStretch = false;
            _matches = default;
            Offset = Length = 0;
            SpecialId = -1;
        }

        /// <summary>Where the current piece starts in the text.</summary>
        public int Offset { get; private set; }

        /// <summary>The current piece's length in characters.</summary>
        public int Length { get; private set; }

        /// <summary>The special token's id when the current piece is one, else -1.</summary>
        public int SpecialId { get; private set; }

        public bool MoveNext()
        {
            while (true)
            {
                if (_inStretch)
                {
                    if (_matches.MoveNext())
                    {
                        var m = _matches.Current;
                        Offset = _stretchStart + m.Index;
                        Length = m.Length;
                        SpecialId = -1;
                        return true;
                    }
                    _inStretch = false;
                    if (_pendingSpecial >= 0)
                    {
                        Offset = _stretchEnd;
                        Length = _pendingLength;
                        SpecialId = _pendingSpecial;
                        _pendingSpecial = -1;
                        return true;
                    }
                }
                if (_next >= _text.Length) return false;
                // the next stretch runs to the next special token (or the end)
                var (at, id, length) = _encoding.FindSpecial(_text[_next..]);
                _stretchStart = _next;
                _stretchEnd = at < 0 ? _text.Length : _next + at;
                _pendingSpecial = at < 0 ? -1 : id;
                _pendingLength = length;
                _next = at < 0 ? _text.Length : _stretchEnd + length;
                _matches = _encoding._pattern.EnumerateMatches(_text[_stretchStart.._stretchEnd]);
                _inStretch = true;
            }
        }

        private int _pendingSpecial;
        private int _pendingLength;
    }

    /// <summary>The first special token in <paramref name="text"/>: where it starts, its id and its length; at = -1 when none.</summary>
    private (int At, int Id, int Length) FindSpecial(ReadOnlySpan<char> text)
    {
        var from = 0;
        while (true)
        {
            var i = text[from..].IndexOf("<|", StringComparison.Ordinal);
            if (i < 0) return (-1, -1, 0);
            i += from;
            foreach (var (s, id) in _special)
            {
                if (text[i..].StartsWith(s, StringComparison.Ordinal)) return (i, id, s.Length);
            }
            from = i + 1;
        }
    }
}
