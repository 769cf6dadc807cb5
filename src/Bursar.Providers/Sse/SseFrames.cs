using System.Buffers;

namespace Bursar.Providers.Sse;

/// <summary>Splits a server-sent-events byte stream into frames (terminated by a blank line) without copying.</summary>
public static class SseFrames
{
    private static ReadOnlySpan<byte> EventPrefix => "event:"u8;
    private static ReadOnlySpan<byte> DataPrefix => "data:"u8;

    /// <summary>Takes one complete frame, including its terminating blank line, off the front of <paramref name="buffer"/>.</summary>
    public static bool TryTakeFrame(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> frame)
    {
        var reader = new SequenceReader<byte>(buffer);
        while (reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
        {
            if (line.Length == 0 || (line.Length == 1 && line.FirstSpan[0] == (byte)'\r'))
            {
                frame = buffer.Slice(0, reader.Position);
                buffer = buffer.Slice(reader.Position);
                return true;
            }
        }
        frame = default;
        return false;
    }

    /// <summary>
    /// Reads the <c>event:</c> name and the <c>data:</c> payload of a single-line-data frame (as both providers send).
    /// Multi-line data is joined with '\n' into <paramref name="scratch"/>.
    /// </summary>
    public static void Parse(ReadOnlySpan<byte> frame, out ReadOnlySpan<byte> eventName, out ReadOnlySpan<byte> data, ArrayBufferWriter<byte> scratch)
    {
        eventName = default;
        data = default;
        var dataLines = 0;
        scratch.ResetWrittenCount();
        while (!frame.IsEmpty)
        {
            var nl = frame.IndexOf((byte)'\n');
            var line = nl < 0 ? frame : frame[..nl];
            frame = nl < 0 ? default : frame[(nl + 1)..];
            if (!line.IsEmpty && line[^1] == (byte)'\r') line = line[..^1];
            if (line.StartsWith(EventPrefix))
            {
                eventName = TrimLeadingSpace(line[EventPrefix.Length..]);
            }
            else if (line.StartsWith(DataPrefix))
            {
                var d = TrimLeadingSpace(line[DataPrefix.Length..]);
                dataLines++;
                if (dataLines == 1)
                {
                    data = d;
                }
                else
                {
                    if (dataLines == 2) scratch.Write(data);
                    scratch.Write("\n"u8);
                    scratch.Write(d);
                    data = default;
                }
            }
        }
        if (dataLines > 1) data = scratch.WrittenSpan;
    }

    private static ReadOnlySpan<byte> TrimLeadingSpace(ReadOnlySpan<byte> s) => !s.IsEmpty && s[0] == (byte)' ' ? s[1..] : s;

    public static void WriteEvent(IBufferWriter<byte> output, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data)
    {
        if (!eventName.IsEmpty)
        {
            output.Write("event: "u8);
            output.Write(eventName);
            output.Write("\n"u8);
        }
        output.Write("data: "u8);
        output.Write(data);
        output.Write("\n\n"u8);
    }
}
