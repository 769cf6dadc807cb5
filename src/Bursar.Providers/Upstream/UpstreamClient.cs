using System.Globalization;
using System.Net.Http.Headers;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.Logging;

namespace Bursar.Providers.Upstream;

/// <summary>
/// Sends a request to a deployment with the provider's own authentication, and retries with backoff on
/// 408, 429, 5xx and 529 (before any byte of the response reached the caller), honouring <c>retry-after-ms</c>,
/// <c>retry-after</c> and <c>x-should-retry</c>.
/// </summary>
public sealed partial class UpstreamClient(ProvidersOptions options, TimeProvider time, ILogger<UpstreamClient> logger)
{
    public const string DefaultAnthropicVersion = "2023-06-01";

    private static readonly MediaTypeHeaderValue Json = new("application/json");

    public static bool IsRetryable(int status) => status is 408 or 429 or 500 or 502 or 503 or 504 or 529;

    public Task<UpstreamResponse> SendAsync(UpstreamDeployment deployment, string path, ReadOnlyMemory<byte> body, Func<string, string?> callerHeader, CancellationToken cancellationToken) =>
        SendAsync(deployment, HttpMethod.Post, path, body, callerHeader, cancellationToken);

    /// <summary>Sends <paramref name="method"/> to the deployment with its auth, timeout and retries; a GET or DELETE carries no body.</summary>
    public async Task<UpstreamResponse> SendAsync(UpstreamDeployment deployment, HttpMethod method, string path, ReadOnlyMemory<byte> body, Func<string, string?> callerHeader, CancellationToken cancellationToken)
    {
        var (response, attempts) = await SendWithRetriesAsync(deployment, method, path, body, null, callerHeader, cancellationToken).ConfigureAwait(false);
        return new UpstreamResponse(response, attempts);
    }

    /// <summary>
    /// Sends any request of the provider's other APIs (files and batches: GET, DELETE, multipart uploads) with the provider's
    /// authentication and timeout, retrying as <see cref="SendAsync(UpstreamDeployment, string, ReadOnlyMemory{byte}, Func{string, string?}, CancellationToken)"/>
    /// does; <paramref name="content"/> makes a fresh body for each attempt (an upload re-read from its spool file). The caller disposes the response.
    /// </summary>
    /// <param name="path">Relative to the deployment's base URL (<c>files</c> for OpenAI's <c>…/v1/</c>, <c>v1/messages/batches</c> for Anthropic).</param>
    public async Task<HttpResponseMessage> SendRawAsync(UpstreamDeployment deployment, HttpMethod method, string path, Func<HttpContent>? content, Func<string, string?> callerHeader, CancellationToken cancellationToken)
    {
        var (response, _) = await SendWithRetriesAsync(deployment, method, path, default, content, callerHeader, cancellationToken).ConfigureAwait(false);
        return response;
    }

    private static HttpContent? JsonBody(HttpMethod method, ReadOnlyMemory<byte> body)
    {
        if (method != HttpMethod.Post) return null;
        var content = new ReadOnlyMemoryContent(body);
        content.Headers.ContentType = Json;
        return content;
    }

    /// <summary>
    /// One request with the provider's authentication and timeout, retried on 408/429/5xx/529 (honouring retry-after) and
    /// on connection failures; each attempt gets a fresh body (<paramref name="content"/>, else the JSON <paramref name="body"/> of a POST).
    /// </summary>
    private async Task<(HttpResponseMessage Response, int Attempts)> SendWithRetriesAsync(UpstreamDeployment deployment, HttpMethod method, string path, ReadOnlyMemory<byte> body, Func<HttpContent>? content, Func<string, string?> callerHeader, CancellationToken cancellationToken)
    {
        var uri = new Uri(deployment.BaseUri, path.TrimStart('/'));
        var attempt = 0;
        while (true)
        {
            using var request = new HttpRequestMessage(method, uri) { Content = content?.Invoke() ?? JsonBody(method, body) };
            Authenticate(deployment, request, callerHeader);
            HttpResponseMessage? response = null;
            // the deployment's timeout bounds the wait for the response headers; the body then streams for as long as it takes
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(deployment.Options.Timeout);
            try
            {
                response = await deployment.Invoker.SendAsync(request, timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                if (attempt >= deployment.Options.MaxRetries)
                    throw new TimeoutException($"Deployment '{deployment.Name}' did not answer within {deployment.Options.Timeout.TotalSeconds:0.#} s.");
                LogRetryConnect(logger, deployment.Name, attempt + 1, "timed out");
                attempt++;
                continue;
            }
            catch (HttpRequestException e) when (attempt < deployment.Options.MaxRetries && !cancellationToken.IsCancellationRequested)
            {
                LogRetryConnect(logger, deployment.Name, attempt + 1, e.Message);
                await Task.Delay(Backoff(attempt), time, cancellationToken).ConfigureAwait(false);
                attempt++;
                continue;
            }
            var status = (int)response.StatusCode;
            if (!IsRetryable(status) || attempt >= deployment.Options.MaxRetries || ShouldNotRetry(response))
                return (response, attempt);
            var delay = RetryDelay(response) ?? Backoff(attempt);
            LogRetry(logger, deployment.Name, status, attempt + 1, delay.TotalMilliseconds);
            response.Dispose();
            await Task.Delay(delay, time, cancellationToken).ConfigureAwait(false);
            attempt++;
        }
    }

    private static void Authenticate(UpstreamDeployment d, HttpRequestMessage request, Func<string, string?> callerHeader)
    {
        var key = string.IsNullOrEmpty(d.Options.ApiKey) ? (d.Simulated ? "simulator" : null) : d.Options.ApiKey;
        if (d.Dialect == Dialect.Anthropic)
        {
            if (key is not null) request.Headers.TryAddWithoutValidation("x-api-key", key);
            request.Headers.TryAddWithoutValidation("anthropic-version", callerHeader("anthropic-version") ?? DefaultAnthropicVersion);
            if (callerHeader("anthropic-beta") is { Length: > 0 } beta) request.Headers.TryAddWithoutValidation("anthropic-beta", beta);
        }
        else if (key is not null)
        {
            request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + key);
        }
        foreach (var (name, value) in d.Options.Headers) request.Headers.TryAddWithoutValidation(name, value);
    }

    private static bool ShouldNotRetry(HttpResponseMessage r) =>
        r.Headers.TryGetValues("x-should-retry", out var v) && v.FirstOrDefault() is "false";

    private TimeSpan? RetryDelay(HttpResponseMessage r)
    {
        TimeSpan? d = null;
        if (r.Headers.TryGetValues("retry-after-ms", out var ms) && double.TryParse(ms.FirstOrDefault(), NumberStyles.Float, CultureInfo.InvariantCulture, out var m))
            d = TimeSpan.FromMilliseconds(m);
        else if (r.Headers.RetryAfter is { } ra)
            d = ra.Delta ?? (ra.Date is { } date ? date - time.GetUtcNow() : null);
        if (d is null) return null;
        if (d < TimeSpan.Zero) return TimeSpan.Zero;
        return d > options.MaxRetryDelay ? options.MaxRetryDelay : d;
    }

    private TimeSpan Backoff(int attempt)
    {
        var baseMs = options.BaseRetryDelay.TotalMilliseconds * Math.Pow(2, attempt);
        var jitter = 0.8 + Random.Shared.NextDouble() * 0.4;
        return TimeSpan.FromMilliseconds(Math.Min(baseMs * jitter, options.MaxRetryDelay.TotalMilliseconds));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Upstream {Deployment} answered {Status}; retry {Attempt} in {DelayMs} ms")]
    private static partial void LogRetry(ILogger logger, string deployment, int status, int attempt, double delayMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Upstream {Deployment} unreachable ({Reason}); retry {Attempt}")]
    private static partial void LogRetryConnect(ILogger logger, string deployment, int attempt, string reason);
}

public sealed record UpstreamResponse(HttpResponseMessage Message, int Retries) : IDisposable
{
    public void Dispose() => Message.Dispose();
}
