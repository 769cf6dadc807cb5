using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>Issue 11: inputs an attacker sends get the caller's dialect error naming the fault; none costs a core or gives a 5xx.</summary>
[Collection(GatewayCollection.Name)]
public sealed class HostileInputTests(GatewayFixture gw)
{
    private async Task<(HttpStatusCode Status, string Text)> Send(string path, string json, Action<HttpRequestMessage>? edit = null)
    {
        using var req = gw.Post(path, json);
        if (path.StartsWith("/v1/messages", StringComparison.Ordinal)) req.Headers.Add("anthropic-version", "2023-06-01");
        edit?.Invoke(req);
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync());
    }

    private static JsonNode Error(string text, bool anthropic)
    {
        var body = JsonNode.Parse(text)!;
        if (anthropic)
        {
            Assert.Equal("error", body["type"]!.GetValue<string>());
            Assert.Equal("invalid_request_error", body["error"]!["type"]!.GetValue<string>());
        }
        else Assert.Equal("invalid_request_error", body["error"]!["type"]!.GetValue<string>());
        return body["error"]!;
    }

    [Theory]
    [InlineData("/v1/messages/count_tokens", """{"model":"claude-haiku-4-5","model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}""", "model")]
    [InlineData("/v1/messages", """{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"messages":[]}""", "messages")]
    [InlineData("/v1/chat/completions", """{"model":"gpt-4o-mini","model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", "model")]
    public async Task A_top_level_key_twice_is_a_400_naming_the_key(string path, string json, string key)
    {
        var (status, text) = await Send(path, json);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var e = Error(text, path.StartsWith("/v1/messages", StringComparison.Ordinal));
        Assert.Contains($"'{key}' more than once", e["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_key_twice_inside_a_message_is_a_400_on_count_tokens()
    {
        var (status, text) = await Send("/v1/messages/count_tokens", """{"model":"claude-haiku-4-5","messages":[{"role":"user","role":"assistant","content":"hi"}]}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("role", Error(text, anthropic: true)["message"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(40_000)]
    [InlineData(80_000)]
    [InlineData(160_000)]
    [InlineData(320_000)]
    public async Task Count_tokens_on_a_long_run_without_spaces_answers_quickly(int length)
    {
        var json = $$"""{"model":"claude-haiku-4-5","system":"{{new string('A', length)}}","messages":[{"role":"user","content":"{{new string('A', length)}}"}]}""";
        var best = double.MaxValue;
        for (var i = 0; i < 3; i++)
        {
            var sw = Stopwatch.StartNew();
            var (status, text) = await Send("/v1/messages/count_tokens", json);
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.True(JsonNode.Parse(text)!["input_tokens"]!.GetValue<long>() >= 2 * length / 16);
        }
        // the count itself is under 50 ms (TokenCounterTests); this bound adds HTTP and JSON parsing of two copies on a loaded machine
        Assert.True(best < 500, $"count_tokens for 2 x {length:N0} x 'A' took {best:F0} ms");
    }

    [Theory]
    [InlineData("/v1/chat/completions", "x-bursar-team")]
    [InlineData("/v1/messages", "x-bursar-feature")]
    public async Task A_tag_header_with_control_characters_is_a_400_naming_the_header(string path, string header)
    {
        var json = path == "/v1/messages"
            ? """{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"""
            : """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";
        var (status, text) = await Send(path, json, r => r.Headers.TryAddWithoutValidation(header, "\u001b[2J\u001b[31mPWNED"));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var e = Error(text, path == "/v1/messages");
        Assert.Contains(header, e["message"]!.GetValue<string>());
        Assert.Contains("control character", e["message"]!.GetValue<string>());
    }

    /// <summary>Sends raw HTTP/1.1 and returns the status and body of the answer.</summary>
    internal static async Task<(int Status, string Body)> RawAsync(string baseUrl, string request)
    {
        var uri = new Uri(baseUrl);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var ms = new MemoryStream();
        var buf = new byte[8192];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buf, cts.Token)) > 0)
            {
                ms.Write(buf, 0, n);
                var sofar = Encoding.UTF8.GetString(ms.ToArray());
                var headEnd = sofar.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                if (headEnd > 0 && System.Text.RegularExpressions.Regex.Match(sofar, @"[Cc]ontent-[Ll]ength: (\d+)") is { Success: true } m
                    && Encoding.UTF8.GetByteCount(sofar[(headEnd + 4)..]) >= int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)) break;
            }
        }
        catch (IOException) { /* the server may reset after answering */ }
        var text = Encoding.UTF8.GetString(ms.ToArray());
        var status = int.Parse(text.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        return (status, text[(text.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..]);
    }

    [Theory]
    [InlineData("/v1/chat/completions")]
    [InlineData("/v1/messages")]
    [InlineData("/v1/messages/count_tokens")]
    public async Task A_malformed_chunked_body_is_a_400_in_the_callers_shape(string path)
    {
        var uri = new Uri(gw.BaseUrl);
        var request = $"POST {path} HTTP/1.1\r\nHost: {uri.Authority}\r\nAuthorization: Bearer {gw.Key}\r\nanthropic-version: 2023-06-01\r\n" +
                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n";
        var (status, body) = await RawAsync(gw.BaseUrl, request);
        Assert.Equal(400, status);
        var e = Error(body, path.StartsWith("/v1/messages", StringComparison.Ordinal));
        Assert.Contains("could not be read", e["message"]!.GetValue<string>());
        Assert.Contains("chunked", e["message"]!.GetValue<string>());
    }
}
