using Bursar.Core.Metering;
using System.Buffers;
using System.IO.Pipelines;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Sse;

/// <summary>
/// Sees every SSE frame of an upstream stream on its way to the caller: forwards it, drops it or rewrites it
/// into <c>output</c>, and meters usage into <see cref="Summary"/>. One instance per stream.
/// </summary>
public abstract class SseStreamHandler(CallSummary summary, TimeProvider time)
{
    public CallSummary Summary { get; } = summary;
    protected TimeProvider Time { get; } = time;

    public abstract void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output);

    /// <summary>Called once when the upstream stream ends normally.</summary>
    public virtual void OnEnd(IBufferWriter<byte> output) { }

    /// <summary>The dialect the caller reads: the error event a broken stream ends with is written in it.</summary>
    protected abstract Dialect CallerDialect { get; }

    /// <summary>
    /// True once the stream reached its end for the caller: the provider's last event (<c>[DONE]</c> or a finish reason;
    /// <c>message_stop</c>), an error event, or the error event Bursar wrote after the upstream broke off.
    /// </summary>
    public bool Ended { get; protected set; }

    /// <summary>
    /// The upstream connection dropped, or the stream ended before its last event: the caller gets the dialect's error
    /// event (never a clean end it would take for a complete answer), and the call is an upstream error.
    /// </summary>
    public void OnUpstreamFailed(IBufferWriter<byte> output, string errorType, string message)
    {
        if (Ended) return;
        Ended = true;
        Summary.ErrorType ??= errorType;
        Summary.ErrorMessage ??= message;
        BeforeError(output);
        WriteError(output, new ProviderError(502, message, ErrorSource.Upstream));
    }

    /// <summary>The error event a broken stream ends with, in the caller's dialect (a Responses stream writes its typed <c>error</c> event).</summary>
    protected virtual void WriteError(IBufferWriter<byte> output, ProviderError error)
    {
        if (CallerDialect == Dialect.Anthropic) SseFrames.WriteEvent(output, "error"u8, error.ToJson(Dialect.Anthropic));
        else SseFrames.WriteEvent(output, default, error.ToJson(Dialect.OpenAI));
    }

    /// <summary>What a translator closes before the error event (nothing by default).</summary>
    protected virtual void BeforeError(IBufferWriter<byte> output) { }

    protected void MarkFirstToken()
    {
        Summary.FirstTokenTimestamp ??= Time.GetTimestamp();
    }
}

public static class SsePump
{
    /// <summary>
    /// Copies <paramref name="upstream"/> to <paramref name="downstream"/> frame by frame as it arrives (no buffering
    /// of the whole body), flushing whenever the upstream has nothing more ready.
    /// </summary>
    private static async ValueTask FlushToCallerAsync(PipeWriter downstream, CancellationToken cancellationToken)
    {
        FlushResult flush;
        try
        {
            flush = await downstream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            throw new CallerDisconnectedException(e);
        }
        if (flush.IsCanceled || flush.IsCompleted) throw new CallerDisconnectedException(null);
    }

    /// <summary>The upstream's last frame: OpenAI's <c>data: [DONE]</c>, Anthropic's <c>message_stop</c> event, a Responses stream's <c>response.completed</c> (or <c>.incomplete</c>, <c>.failed</c>).</summary>
    private static bool IsTerminal(ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data) =>
        data.SequenceEqual("[DONE]"u8) || eventName.SequenceEqual("message_stop"u8) || ResponsesMeteringHandler.IsTerminal(eventName);

    /// <param name="beforeLastFlush">Runs once, before the flush that carries the stream's end to the caller (after the
    /// upstream's terminal frame, <c>[DONE]</c> or <c>message_stop</c>, or at the end of the upstream): the gateway makes
    /// the call's ledger record durable there.</param>
    public static async Task PumpAsync(Stream upstream, PipeWriter downstream, SseStreamHandler handler, CancellationToken cancellationToken, ArrayBufferWriter<byte>? capture = null, Func<ValueTask>? beforeLastFlush = null)
    {
        var ended = false;
        IBufferWriter<byte> output = capture is null ? downstream : new TeeBufferWriter(downstream, capture);
        var reader = PipeReader.Create(upstream, new StreamPipeReaderOptions(bufferSize: 16 * 1024, leaveOpen: true));
        var scratch = new ArrayBufferWriter<byte>(256);
        byte[]? joined = null;
        try
        {
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (!cancellationToken.IsCancellationRequested && e is IOException or HttpRequestException or OperationCanceledException)
                {
                    // the upstream connection broke (reset, truncated body, upstream timeout): say so in the caller's dialect
                    handler.OnUpstreamFailed(output, "stream_interrupted", $"The upstream connection dropped before the stream ended: {e.Message}");
                    if (!ended && beforeLastFlush is not null)
                    {
                        ended = true;
                        await beforeLastFlush().ConfigureAwait(false);
                    }
                    await FlushToCallerAsync(downstream, cancellationToken).ConfigureAwait(false);
                    return;
                }
                var buffer = result.Buffer;
                var wrote = false;
                while (SseFrames.TryTakeFrame(ref buffer, out var frame))
                {
                    ReadOnlySpan<byte> span;
                    if (frame.IsSingleSegment)
                    {
                        span = frame.FirstSpan;
                    }
                    else
                    {
                        var len = (int)frame.Length;
                        if (joined is null || joined.Length < len)
                        {
                            if (joined is not null) ArrayPool<byte>.Shared.Return(joined);
                            joined = ArrayPool<byte>.Shared.Rent(len);
                        }
                        frame.CopyTo(joined);
                        span = joined.AsSpan(0, len);
                    }
                    SseFrames.Parse(span, out var ev, out var data, scratch);
                    handler.OnFrame(span, ev, data, output);
                    wrote = true;
                    var terminal = !ended && beforeLastFlush is not null && IsTerminal(ev, data);
                    if (terminal)
                    {
                        ended = true;
                        await beforeLastFlush!().ConfigureAwait(false);
                    }
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    // a trailing frame without its blank line still counts
                    if (!buffer.IsEmpty)
                    {
                        var rest = buffer.ToArray();
                        SseFrames.Parse(rest, out var ev, out var data, scratch);
                        if (!data.IsEmpty) handler.OnFrame([.. rest, (byte)'\n', (byte)'\n'], ev, data, output);
                    }
                    handler.OnEnd(output);
                    if (!handler.Ended) handler.OnUpstreamFailed(output, "stream_truncated", "The upstream stream ended before its last event (no [DONE], finish reason or message_stop): the answer is incomplete.");
                    if (!ended && beforeLastFlush is not null)
                    {
                        ended = true;
                        await beforeLastFlush().ConfigureAwait(false);
                    }
                    await FlushToCallerAsync(downstream, cancellationToken).ConfigureAwait(false);
                    return;
                }
                if (wrote) await FlushToCallerAsync(downstream, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            if (joined is not null) ArrayPool<byte>.Shared.Return(joined);
            await reader.CompleteAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>The caller went away while its stream was being written (as opposed to the upstream failing).</summary>
public sealed class CallerDisconnectedException(Exception? inner) : IOException("The caller closed the stream.", inner);

/// <summary>Writes to the caller and keeps a copy of every byte (to store a streamed answer in the response cache).</summary>
internal sealed class TeeBufferWriter(IBufferWriter<byte> inner, ArrayBufferWriter<byte> copy) : IBufferWriter<byte>
{
    private Memory<byte> _last;

    public void Advance(int count)
    {
        copy.Write(_last.Span[..count]);
        inner.Advance(count);
    }

    public Memory<byte> GetMemory(int sizeHint = 0) => _last = inner.GetMemory(sizeHint);

    public Span<byte> GetSpan(int sizeHint = 0) => (_last = inner.GetMemory(sizeHint)).Span;
}
