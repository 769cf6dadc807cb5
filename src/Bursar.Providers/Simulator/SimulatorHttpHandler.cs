using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;

namespace Bursar.Providers.Simulator;

/// <summary>
/// Embeds the Simulator in-process: an <see cref="HttpMessageHandler"/> an <see cref="HttpClient"/> sends real HTTP
/// requests to. Responses stream through a pipe as the Simulator writes them, so streaming behaves as over a socket.
/// </summary>
public sealed class SimulatorHttpHandler(ProviderSimulator simulator) : HttpMessageHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var streamed = request.Content is not null && ProviderSimulator.StreamsRequestBody(request.Method.Method, request.RequestUri?.AbsolutePath ?? "/");
        var body = request.Content is null || streamed ? [] : await request.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        var stream = streamed ? await request.Content!.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false) : null;
        var pipe = new Pipe();
        var exchange = new PipeExchange(request, body, stream, pipe.Writer);
        _ = Task.Run(async () =>
        {
            try
            {
                await simulator.HandleAsync(exchange, cancellationToken).ConfigureAwait(false);
                exchange.Started();
                await pipe.Writer.CompleteAsync().ConfigureAwait(false);
            }
            catch (Exception e)
            {
                exchange.Started();
                await pipe.Writer.CompleteAsync(e).ConfigureAwait(false);
            }
        }, CancellationToken.None);
        await exchange.HeadersSent.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        var response = new HttpResponseMessage((HttpStatusCode)exchange.Status)
        {
            RequestMessage = request,
            Content = new StreamContent(pipe.Reader.AsStream()),
        };
        foreach (var (name, value) in exchange.Headers)
        {
            if (name.Equals("content-type", StringComparison.OrdinalIgnoreCase)) response.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(value);
            else response.Headers.TryAddWithoutValidation(name, value);
        }
        return response;
    }

    private sealed class PipeExchange : SimulatorExchange
    {
        private readonly HttpRequestMessage _request;
        private readonly PipeWriter _writer;

        [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
        public PipeExchange(HttpRequestMessage request, byte[] body, Stream? bodyStream, PipeWriter writer)
        {
            _request = request;
            _writer = writer;
            Method = request.Method.Method;
            Path = request.RequestUri?.AbsolutePath ?? "/";
            Query = request.RequestUri?.Query.TrimStart('?') ?? "";
            Body = body;
            BodyStream = bodyStream;
        }

        public int Status { get; private set; } = 200;
        public List<(string, string)> Headers { get; } = [];
        public TaskCompletionSource HeadersSent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override string? Header(string name)
        {
            if (_request.Headers.TryGetValues(name, out var v)) return string.Join(",", v);
            if (_request.Content?.Headers.TryGetValues(name, out var cv) == true) return string.Join(",", cv);
            return null;
        }

        public override void SetStatus(int status) => Status = status;

        public override void SetHeader(string name, string value) => Headers.Add((name, value));

        public void Started() => HeadersSent.TrySetResult();

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            Started();
            var r = await _writer.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            if (r.IsCompleted) throw new OperationCanceledException("The reader closed the simulated response.");
        }
    }
}
