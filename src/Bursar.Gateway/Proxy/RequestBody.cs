using System.Buffers;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Proxy;

/// <summary>Reads a caller's body into a pooled buffer, within <c>Bursar:MaxRequestBodyBytes</c>; framing errors are the caller's 400.</summary>
public static partial class RequestBody
{
    /// <summary>
    /// The pool request bodies are read into. Not <see cref="ArrayPool{T}.Shared"/>: that pool keeps arrays of any size
    /// per core for good, so a burst of multi-megabyte bodies stays resident (RSS went from 84 MB to 2.18 GB under a
    /// fuzz run). Here only buffers up to <see cref="MaxPooledBodyBytes"/> are pooled; a larger body gets a plain array
    /// the GC takes back once the call ends.
    /// </summary>
    private static readonly ArrayPool<byte> BodyPool = ArrayPool<byte>.Create(MaxPooledBodyBytes, 32);

    /// <summary>The largest body buffer kept for reuse (1 MiB).</summary>
    internal const int MaxPooledBodyBytes = 1024 * 1024;

    internal static byte[] Rent(int size)
    {
        if (size <= MaxPooledBodyBytes) return BodyPool.Rent(size);
        LargeBodyMemoryTrim.LargeBodySeen(); // the copies a large body makes are given back to the OS once such bodies stop
        return GC.AllocateUninitializedArray<byte>(size);
    }

    public static void Return(byte[] buffer)
    {
        if (buffer.Length <= MaxPooledBodyBytes && buffer.Length > 0) BodyPool.Return(buffer);
    }

    /// <summary>The caller's body could not be read as HTTP (bad chunked framing, fewer bytes than its Content-Length): a 400 that says so.</summary>
    internal static ProviderError UnreadableBody(Exception e) => e is BadHttpRequestException { StatusCode: 413 }
        ? ProviderError.TooLarge($"The request body is too large: {e.Message}")
        : ProviderError.BadRequest($"The request body could not be read: {e.Message} Check the Content-Length or Transfer-Encoding: chunked framing.");

    public static async Task<(byte[] Buffer, int Length, ProviderError? Error)> ReadAsync(HttpRequest request, long max, ILogger logger, CancellationToken ct)
    {
        if (request.ContentLength > max)
            return ([], 0, ProviderError.TooLarge($"The request body is {request.ContentLength} bytes; the limit is {max} bytes (Bursar:MaxRequestBodyBytes)."));
        // a declared length is trusted only up to the pooled size: a caller that announces 30 MB and sends 10 bytes gets a small buffer
        var size = request.ContentLength is { } cl and > 0 ? (int)Math.Min(cl, MaxPooledBodyBytes) : 16 * 1024;
        var buffer = Rent(size);
        var length = 0;
        try
        {
            while (true)
            {
                if (length == buffer.Length)
                {
                    if (buffer.Length >= max)
                    {
                        Return(buffer);
                        return ([], 0, ProviderError.TooLarge($"The request body exceeds the limit of {max} bytes (Bursar:MaxRequestBodyBytes)."));
                    }
                    var bigger = Rent((int)Math.Min(Math.Max((long)buffer.Length * 2, request.ContentLength ?? 0), max + 1));
                    buffer.AsSpan(0, length).CopyTo(bigger);
                    Return(buffer);
                    buffer = bigger;
                }
                var n = await request.Body.ReadAsync(buffer.AsMemory(length), ct).ConfigureAwait(false);
                if (n == 0) break;
                length += n;
                if (length > max)
                {
                    Return(buffer);
                    return ([], 0, ProviderError.TooLarge($"The request body exceeds the limit of {max} bytes (Bursar:MaxRequestBodyBytes)."));
                }
            }
        }
        catch (Exception e) when (e is BadHttpRequestException || (e is IOException && !ct.IsCancellationRequested))
        {
            // Kestrel's framing errors ("Transfer-Encoding: chunked" then "ZZZ"; an IOException for a chunk size that overflows): the caller's fault, one line in the log
            Return(buffer);
            LogUnreadableBody(logger, e.Message);
            return ([], 0, UnreadableBody(e));
        }
        catch
        {
            Return(buffer);
            throw;
        }
        return (buffer, length, null);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused a request body that could not be read: {Reason}")]
    private static partial void LogUnreadableBody(ILogger logger, string reason);
}
