//! The binary's terminal for `top` (declared by `main.rs`, not part of the library): raw mode
//! and the alternate screen while the view runs, restored on every way out (drop, panic), and
//! a thread that turns key presses into [`Key`]s.

use std::{
    io::{IsTerminal, Stdout},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};
use stacksampler::top::Key;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// How long the key thread waits for input before it checks whether to stop.
const KEY_POLL: Duration = Duration::from_millis(100);

/// Fails with one line when standard input or output is not a terminal.
pub fn require_tty() -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        return Ok(());
    }
    anyhow::bail!(
        "top needs a terminal (standard input and output); without one, use \
         `stacksampler record --pid PID` for a report"
    )
}

/// The terminal in raw mode on the alternate screen; dropping it restores the terminal.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    pub fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        // A panic must not leave the terminal raw: restore it before the message is printed.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        let mut stdout = std::io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e).context("switching to the alternate screen");
        }
        let terminal = Terminal::new(CrosstermBackend::new(stdout)).map_err(|e| {
            restore();
            anyhow::Error::new(e).context("opening the terminal")
        })?;
        Ok(Self { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen, shows the cursor, ends raw mode (each step is harmless when
/// already done).
fn restore() {
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// The thread reading keys, stopped when dropped.
pub struct KeyReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KeyReader {
    /// Starts reading keys; they arrive on the returned channel.
    pub fn start() -> (Self, UnboundedReceiver<Key>) {
        let (tx, rx) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || read_keys(&tx, &flag));
        (
            Self {
                stop,
                thread: Some(thread),
            },
            rx,
        )
    }
}

impl Drop for KeyReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_keys(tx: &UnboundedSender<Key>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(KEY_POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            // The terminal is gone: the closed channel ends the view.
            Err(_) => return,
        }
        let key = match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    Some(Key::Quit)
                }
                KeyCode::Char(c) => Key::from_char(c),
                _ => None,
            },
            Ok(Event::Resize(..)) => Some(Key::Redraw),
            Ok(_) => None,
            Err(_) => return,
        };
        if let Some(key) = key
            && tx.send(key).is_err()
        {
            return;
        }
    }
}
