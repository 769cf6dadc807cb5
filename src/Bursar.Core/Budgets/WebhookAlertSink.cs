using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Bursar.Core.Budgets;

public sealed class BudgetAlertOptions
{
    /// <summary>Where soft-limit alerts are POSTed. None when empty.</summary>
    public string? WebhookUrl { get; set; }
    /// <summary>HMAC-SHA256 key; the signature goes in <c>x-bursar-signature: sha256=&lt;hex&gt;</c> over the raw body.</summary>
    public string? WebhookSecret { get; set; }
    /// <summary>Attempts per alert. Default 5.</summary>
    public int MaxAttempts { get; set; } = 5;
    /// <summary>First retry delay; doubles each attempt. Default 1 s.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// Delivers soft-limit alerts as signed webhook POSTs from a background queue: retried with backoff, never blocking
/// the request that crossed the limit. Also keeps the alerts raised so far for the dashboard data.
/// </summary>
public sealed partial class WebhookAlertSink : IBudgetAlertSink, IAsyncDisposable
{
    private readonly BudgetAlertOptions _options;
    private readonly HttpMessageInvoker _http;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Channel<BudgetStatus> _queue = Channel.CreateBounded<BudgetStatus>(new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.DropOldest });
    private readonly Task _loop;
    private readonly List<BudgetStatus> _raised = [];

    public WebhookAlertSink(BudgetAlertOptions options, HttpMessageInvoker http, TimeProvider time, ILogger<WebhookAlertSink> logger)
    {
        _options = options;
        _http = http;
        _time = time;
        _logger = logger;
        _loop = Task.Run(RunAsync);
    }

    public long Delivered => Interlocked.Read(ref _delivered);
    private long _delivered;
    public long Failed => Interlocked.Read(ref _failed);
    private long _failed;

    public IReadOnlyList<BudgetStatus> Raised
    {
        get { lock (_raised) return _raised.ToArray(); }
    }

    public void SoftLimitReached(BudgetStatus status)
    {
        lock (_raised) _raised.Add(status);
        if (!string.IsNullOrEmpty(_options.WebhookUrl)) _queue.Writer.TryWrite(status);
    }

    public static string Sign(string secret, byte[] body) =>
        "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), body));

    private async Task RunAsync()
    {
        await foreach (var alert in _queue.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            var body = JsonSerializer.SerializeToUtf8Bytes(new
            {
                type = "budget.soft_limit_reached",
                budget_id = alert.Budget.Id,
                scope = alert.Budget.Scope.ToString().ToLowerInvariant(),
                value = alert.Budget.Value,
                period = alert.Budget.Period.ToString().ToLowerInvariant(),
                limit_usd = alert.Budget.LimitUsd,
                soft_limit_usd = alert.Budget.SoftLimitUsd,
                spent_usd = alert.SpentUsd,
                window_start = alert.WindowStart,
                resets_at = alert.ResetsAt,
                sent_at = _time.GetUtcNow(),
            });
            var delay = _options.RetryDelay;
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    using var req = new HttpRequestMessage(HttpMethod.Post, _options.WebhookUrl) { Content = new ByteArrayContent(body) };
                    req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                    if (!string.IsNullOrEmpty(_options.WebhookSecret)) req.Headers.Add("x-bursar-signature", Sign(_options.WebhookSecret, body));
                    using var resp = await _http.SendAsync(req, CancellationToken.None).ConfigureAwait(false);
                    if (resp.IsSuccessStatusCode)
                    {
                        Interlocked.Increment(ref _delivered);
                        break;
                    }
                    LogRetry(_logger, alert.Budget.Id, attempt, $"HTTP {(int)resp.StatusCode}");
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                    LogRetry(_logger, alert.Budget.Id, attempt, e.Message);
                }
                if (attempt >= _options.MaxAttempts)
                {
                    Interlocked.Increment(ref _failed);
                    LogGaveUp(_logger, alert.Budget.Id, attempt, _options.WebhookUrl!);
                    break;
                }
                await Task.Delay(delay, _time).ConfigureAwait(false);
                delay *= 2;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Budget alert webhook for {BudgetId} failed (attempt {Attempt}): {Reason}; retrying")]
    private static partial void LogRetry(ILogger logger, string budgetId, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Budget alert webhook for {BudgetId} gave up after {Attempts} attempts to {Url}")]
    private static partial void LogGaveUp(ILogger logger, string budgetId, int attempts, string url);
}
